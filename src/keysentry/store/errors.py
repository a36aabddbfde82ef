"""Store errors, grouped by what the caller must do.

    StoreError                   root: the store cannot do what was asked
    ├── DatabaseConfigError      KEYSENTRY_DATABASE_URL (or the URL given) cannot be used: fix it
    ├── DatabaseUnavailable      the database cannot be reached or opened: start it, fix access
    └── MigrationError           the schema cannot be brought up to date (or is newer than this
                                 keysentry): upgrade keysentry, or restore the database

Messages name the database with its password hidden and never carry a secret value.
"""

from __future__ import annotations


class StoreError(Exception):
    """Root of the store's errors; the message is written for the operator."""


class DatabaseConfigError(StoreError, ValueError):
    """The database URL is not one keysentry can use."""


class DatabaseUnavailable(StoreError):
    """The database did not answer or refused the connection."""


class MigrationError(StoreError):
    """The schema could not be upgraded to the version this keysentry needs."""
