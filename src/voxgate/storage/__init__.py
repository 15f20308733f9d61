"""Persistence behind small repositories: SQLAlchemy 2 (async) with Alembic migrations;
SQLite (WAL) by default, PostgreSQL by URL. May import `voxgate.control`, nothing above."""
