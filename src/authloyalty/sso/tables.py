"""sso's tables (SQLAlchemy Core); the migrations create exactly these."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
)

from authloyalty.platform.audit import audit_table
from authloyalty.platform.outbox import outbox_table

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("email", String(254), nullable=False),
    Column("email_normalized", String(254), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("name", String(100), nullable=True),
    Column("birthday", Date, nullable=True),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Soft deletion: a deleted user cannot log in and keeps the email until purged (personal
    # data erased, the id kept so the ledger still means something).
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    Column("purged_at", DateTime(timezone=True), nullable=True),
    # Incremented by every deletion and restore, in their UPDATE: the version their events
    # carry, by which loyalty orders them (events.UNVERSIONED).
    Column("lifecycle_version", Integer, nullable=False, server_default="0"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("refresh_token_id", Uuid, nullable=False),
    Column("previous_refresh_token_id", Uuid, nullable=True),
    Column("rotated_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoke_reason", String(32), nullable=True),
    Column("user_agent", String(256), nullable=True),
    Column("ip", String(64), nullable=True),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Index("ix_sessions_user_id", "user_id"),
)

login_failures = Table(
    "login_failures",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("email_normalized", String(254), nullable=False),
    Column("client", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_login_failures_email", "email_normalized", "created_at"),
    Index("ix_login_failures_client", "client", "created_at"),
)

outbox = outbox_table(metadata)

# Admin actions, written in the transaction of the action (platform/audit.py).
audit_log = audit_table(metadata)
