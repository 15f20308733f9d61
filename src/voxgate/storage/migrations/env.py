"""Alembic environment: migrations run on the connection `storage.db.upgrade` passes in
(online only; the schema is the store's, not generated)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through voxgate.storage.db.upgrade (voxgate db upgrade)")
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
