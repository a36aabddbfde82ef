"""Alembic environment: keysentry passes the connection in (see keysentry.store.migrate).

Online migrations run on the connection given in `config.attributes["connection"]`, inside the
caller's transaction. Offline (`--sql`) renders SQL for the URL in `sqlalchemy.url`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from keysentry.store.migrate import load_models

# any constant: the advisory lock that serialises concurrent upgrades of one PostgreSQL database
_PG_LOCK_ID = 0x6B65_7973_656E  # "keysen"

config = context.config
target_metadata = load_models()  # every keysentry.store module's tables


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )


def run_online(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    given = config.attributes.get("connection")
    if given is None:
        raise RuntimeError(
            "keysentry's migrations run through `keysentry db upgrade` or keysentry.store.migrate.upgrade()"
        )
    run_online(given)
