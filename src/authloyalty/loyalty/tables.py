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
    UniqueConstraint,
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
    # The points of the account's holds in state 'held' (expired or not: see holds), changed
    # in the transaction that changes one; available = balance - active held points.
    Column("held", BigInteger, nullable=False, server_default="0"),
    CheckConstraint("balance >= 0", name="ck_accounts_balance_non_negative"),
    CheckConstraint("held >= 0", name="ck_accounts_held_non_negative"),
    # The soonest expires_at of the account's lots with points left (null: none), kept in the
    # transaction that changes one; a movement on an account with lots takes the slow path.
    Column("next_expiry", DateTime(timezone=True), nullable=True),
    Index("ix_accounts_next_expiry", "next_expiry"),
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
    # The hold a capture's withdrawal settles; null otherwise.
    Column("hold_id", BigInteger, nullable=True),
    CheckConstraint("amount > 0", name="ck_ledger_amount_positive"),
    CheckConstraint("balance_after >= 0", name="ck_ledger_balance_after_non_negative"),
    # The entry a reversal undoes; null otherwise. Unique: an entry is reversed at most once.
    Column("reverses", BigInteger, nullable=True),
    CheckConstraint("kind IN ('deposit', 'withdrawal', 'expiry', 'reversal')",
                    name="ck_ledger_kind"),
    Index("ix_ledger_account_id", "account_id", "id"),
    Index("uq_ledger_reverses", "reverses", unique=True),
)

# Points of a deposit that expire at ``expires_at``; ``remaining`` is what is left of them
# (withdrawals take from the soonest-expiring lots first, the expiry takes the rest).
lots = Table(
    "lots",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("account_id", Uuid, ForeignKey("accounts.user_id"), nullable=False),
    Column("entry_id", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("amount > 0", name="ck_lots_amount_positive"),
    CheckConstraint("remaining >= 0 AND remaining <= amount",
                    name="ck_lots_remaining_within_amount"),
    UniqueConstraint("entry_id", name="uq_lots_entry_id"),
    Index("ix_lots_account_expires_at", "account_id", "expires_at", "id"),
)

# What each withdrawal took from each lot (a reversal gives it back).
lot_consumptions = Table(
    "lot_consumptions",
    metadata,
    Column("entry_id", BigInteger, nullable=False),
    Column("lot_id", BigInteger, ForeignKey("lots.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    PrimaryKeyConstraint("entry_id", "lot_id", name="pk_lot_consumptions"),
    CheckConstraint("amount > 0", name="ck_lot_consumptions_amount_positive"),
)

# Points reserved on an account until captured (a withdrawal), released or expired. A hold in
# state 'held' whose expires_at has passed counts as expired everywhere, swept or not.
holds = Table(
    "holds",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("account_id", Uuid, ForeignKey("accounts.user_id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("captured_amount", BigInteger, nullable=False, server_default="0"),
    Column("comment", String(255), nullable=False),
    Column("state", String(16), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("settled_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("amount > 0", name="ck_holds_amount_positive"),
    CheckConstraint("captured_amount >= 0 AND captured_amount <= amount",
                    name="ck_holds_captured_within_amount"),
    CheckConstraint("state IN ('held', 'captured', 'released', 'expired')",
                    name="ck_holds_state"),
    Index("ix_holds_account_id", "account_id", "id"),
    Index("ix_holds_state_expires_at", "state", "expires_at"),
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
