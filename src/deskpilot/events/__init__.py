"""Events: audit log, notifications and pub/sub."""
