"""loyalty: two-phase holds (reserve, then capture or release) and the points each account holds.

Revision ID: loyalty_0006
Revises: loyalty_0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "loyalty_0006"
down_revision: str | None = "loyalty_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "holds",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("account_id", sa.Uuid(), sa.ForeignKey("accounts.user_id"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("captured_amount", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("comment", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("settled_at", _TS, nullable=True),
        sa.CheckConstraint("amount > 0", name="ck_holds_amount_positive"),
        sa.CheckConstraint("captured_amount >= 0 AND captured_amount <= amount",
                           name="ck_holds_captured_within_amount"),
        sa.CheckConstraint("state IN ('held', 'captured', 'released', 'expired')",
                           name="ck_holds_state"),
    )
    op.create_index("ix_holds_account_id", "holds", ["account_id", "id"])
    op.create_index("ix_holds_state_expires_at", "holds", ["state", "expires_at"])
    # 0 for every existing account: no hold exists yet. The sum of the amounts of the account's
    # holds in state 'held' (expired or not), kept in the transaction that changes one.
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("held", sa.BigInteger(), nullable=False, server_default="0"))
        batch.create_check_constraint("ck_accounts_held_non_negative", "held >= 0")
    # Null for every existing entry: a capture's withdrawal names its hold.
    with op.batch_alter_table("ledger_entries") as batch:
        batch.add_column(sa.Column("hold_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_column("hold_id")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_constraint("ck_accounts_held_non_negative", type_="check")
        batch.drop_column("held")
    op.drop_index("ix_holds_state_expires_at", "holds")
    op.drop_index("ix_holds_account_id", "holds")
    op.drop_table("holds")
