"""PSA integration: ticket context, ticket notes and time entries in ConnectWise Manage or through a webhook."""
