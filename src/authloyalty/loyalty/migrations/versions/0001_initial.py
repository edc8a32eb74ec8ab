"""loyalty: accounts, ledger, idempotency keys, inbox, revoked sessions.

Revision ID: loyalty_0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "loyalty_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("user_id", sa.Uuid(), primary_key=True),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.CheckConstraint("balance >= 0", name="ck_accounts_balance_non_negative"),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("account_id", sa.Uuid(), sa.ForeignKey("accounts.user_id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("comment", sa.String(255), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_ledger_amount_positive"),
        sa.CheckConstraint("balance_after >= 0", name="ck_ledger_balance_after_non_negative"),
        sa.CheckConstraint("kind IN ('deposit', 'withdrawal')", name="ck_ledger_kind"),
    )
    op.create_index("ix_ledger_account_id", "ledger_entries", ["account_id", "id"])
    op.create_table(
        "idempotency_keys",
        sa.Column("caller_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("caller_id", "key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    op.create_table(
        "inbox",
        sa.Column("event_id", sa.Uuid(), primary_key=True),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("processed_at", _TS, nullable=False),
    )
    op.create_table(
        "revoked_sessions",
        sa.Column("session_id", sa.Uuid(), primary_key=True),
        sa.Column("revoked_until", _TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("revoked_sessions")
    op.drop_table("inbox")
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_table("ledger_entries")
    op.drop_table("accounts")
