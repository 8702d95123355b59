"""Alembic's entry point for the archive's migrations: always run on the connection the archive
passes in (inside its transaction), never from a URL in a config file."""

from __future__ import annotations

from alembic import context

from engine.archive.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                  transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
