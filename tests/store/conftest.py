"""Fixtures of the store tests: every `db_target` test runs on SQLite and on PostgreSQL."""

from store.backends import db, db_target, pg_database, pg_target, vault  # noqa: F401 - fixtures
