"""Identity: accounts (tenants), clients, teams, users, roles and API tokens."""
