"""loyalty's tables (SQLAlchemy Core); the migrations create exactly these."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    Uuid,
)

from authloyalty.platform.audit import audit_table

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("user_id", Uuid, primary_key=True),
    Column("balance", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Set while the user is deleted: no deposit or withdrawal, the history kept.
    Column("frozen_at", DateTime(timezone=True), nullable=True),
    # The version of the newest deletion or restore applied (events.UNVERSIONED): an older one
    # arriving late changes nothing.
    Column("lifecycle_version", BigInteger, nullable=False, server_default="0"),
    CheckConstraint("balance >= 0", name="ck_accounts_balance_non_negative"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("account_id", Uuid, ForeignKey("accounts.user_id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("comment", String(255), nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("amount > 0", name="ck_ledger_amount_positive"),
    CheckConstraint("balance_after >= 0", name="ck_ledger_balance_after_non_negative"),
    CheckConstraint("kind IN ('deposit', 'withdrawal')", name="ck_ledger_kind"),
    Index("ix_ledger_account_id", "account_id", "id"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("caller_id", Uuid, nullable=False),
    Column("key", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("result", Text, nullable=True),  # the entry written, as JSON
    # The rendered answer, in rows from before results were stored (loyalty_0002).
    Column("status_code", Integer, nullable=True),
    Column("response_body", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("caller_id", "key", name="pk_idempotency_keys"),
    Index("ix_idempotency_keys_created_at", "created_at"),
)

inbox = Table(
    "inbox",
    metadata,
    Column("event_id", Uuid, primary_key=True),
    Column("event_type", String(64), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False),
)

revoked_sessions = Table(
    "revoked_sessions",
    metadata,
    Column("session_id", Uuid, primary_key=True),
    Column("revoked_until", DateTime(timezone=True), nullable=False),
)

# Admin actions, written in the transaction of the action (platform/audit.py).
audit_log = audit_table(metadata)
