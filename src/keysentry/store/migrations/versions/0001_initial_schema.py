"""Initial schema: tenants, connections, credential versions, check history, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Types are spelled out here, not imported from models.py: a migration must keep meaning what it
# meant when it was written, whatever the models become.
Timestamp = sa.DateTime(timezone=True)
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
LIVE = sa.text("removed_at IS NULL")
CURRENT = sa.text("revoked_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
    )
    op.create_table(
        "connections",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("exchange", sa.String(32), nullable=False),
        sa.Column("environment", sa.String(32), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(128), nullable=True),
        sa.Column("masked_key", sa.String(64), nullable=False),
        sa.Column("key_fingerprint", sa.String(64), nullable=False),
        sa.Column("api_key_hash", sa.String(64), nullable=True),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("last_known_status", sa.String(32), nullable=False),
        sa.Column("findings", Json, nullable=False),
        sa.Column("permissions", Json, nullable=False),
        sa.Column("ip_restricted", sa.Boolean(), nullable=True),
        sa.Column("expires_at", Timestamp, nullable=True),
        sa.Column("last_definitive_at", Timestamp, nullable=True),
        sa.Column("temporary_findings", Json, nullable=False),
        sa.Column("temporary_since", Timestamp, nullable=True),
        sa.Column("last_checked_at", Timestamp, nullable=True),
        sa.Column("next_check_at", Timestamp, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("removed_at", Timestamp, nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_connections_tenant_id_tenants"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connections")),
    )
    op.create_index(
        "uq_connections_live_account",
        "connections",
        ["tenant_id", "exchange", "account_id"],
        unique=True,
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    )
    op.create_index(
        "uq_connections_live_key",
        "connections",
        ["tenant_id", "api_key_hash"],
        unique=True,
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    )
    op.create_index("ix_connections_tenant", "connections", ["tenant_id", "created_at"])
    op.create_index(
        "ix_connections_next_check",
        "connections",
        ["next_check_at"],
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    )
    op.create_table(
        "credential_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("connection_id", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("masked_key", sa.String(64), nullable=False),
        sa.Column("key_fingerprint", sa.String(64), nullable=False),
        sa.Column("exchange_key_version", sa.Integer(), nullable=False),
        sa.Column("api_key_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("api_key_key_version", sa.Integer(), nullable=True),
        sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("secret_key_version", sa.Integer(), nullable=True),
        sa.Column("passphrase_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("passphrase_key_version", sa.Integer(), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("verified_at", Timestamp, nullable=True),
        sa.Column("revoked_at", Timestamp, nullable=True),
        sa.Column("destroyed_at", Timestamp, nullable=True),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_credential_versions_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credential_versions")),
    )
    op.create_index(
        "uq_credential_versions_number", "credential_versions", ["connection_id", "version"], unique=True
    )
    op.create_index(
        "uq_credential_versions_current",
        "credential_versions",
        ["connection_id"],
        unique=True,
        sqlite_where=CURRENT,
        postgresql_where=CURRENT,
    )
    op.create_table(
        "check_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("connection_id", sa.String(40), nullable=False),
        sa.Column("credential_version", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("checked_at", Timestamp, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("findings", Json, nullable=False),
        sa.Column("account_id", sa.String(128), nullable=True),
        sa.Column("expires_at", Timestamp, nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_check_history_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_check_history")),
    )
    op.create_index("ix_check_history_connection", "check_history", ["connection_id", "checked_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(64), nullable=True),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("details", Json, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_target", "audit_log", ["target", "at"])
    op.create_index("ix_audit_log_tenant", "audit_log", ["tenant_id", "at"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("check_history")
    op.drop_table("credential_versions")
    op.drop_table("connections")
    op.drop_table("tenants")
