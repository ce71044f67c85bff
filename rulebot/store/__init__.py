"""The relationship store and the idempotency records (SQLite, PostgreSQL)."""
