"""Persistence behind the control interfaces: SQLAlchemy 2 (async) repositories with Alembic
migrations (SQLite WAL by default, PostgreSQL by URL) and the Redis shared state.
May import `voxgate.control`, nothing above."""
