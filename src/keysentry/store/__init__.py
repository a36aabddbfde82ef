"""keysentry.store: connections, versioned encrypted credentials, check history and the audit log.

SQLAlchemy 2 (async) models and repositories, with Alembic migrations shipped inside the
package. A SQLite file in the data directory by default, PostgreSQL by KEYSENTRY_DATABASE_URL
(docs/store.md). The lifecycle rules live one floor up, in keysentry.connections; this package
stores what it is told and guarantees what the schema can: one live connection per (tenant,
exchange account) and per (tenant, API key), one current credential version per connection,
atomic key switches, and no secret outside a vault ciphertext.

    db = await Database.open(resolve_url(settings.database_url, settings.data_dir))

Modules: db (URLs, engine, sessions), migrate (upgrades), models (tables), connections,
credentials, history, audit (repositories), records (read models without secrets), rewrap (the
vault's RewrapTarget over credential versions), errors.
"""

from keysentry.store.connections import LOCAL_TENANT
from keysentry.store.db import Database, resolve_url, safe_url
from keysentry.store.errors import DatabaseConfigError, DatabaseUnavailable, MigrationError, StoreError
from keysentry.store.records import AuditView, CheckView, ConnectionRecord
from keysentry.store.rewrap import CredentialRewrapTarget

__all__ = [
    "LOCAL_TENANT",
    "AuditView",
    "CheckView",
    "ConnectionRecord",
    "CredentialRewrapTarget",
    "Database",
    "DatabaseConfigError",
    "DatabaseUnavailable",
    "MigrationError",
    "StoreError",
    "resolve_url",
    "safe_url",
]
