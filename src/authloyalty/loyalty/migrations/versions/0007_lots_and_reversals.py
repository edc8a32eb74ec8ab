"""loyalty: expiring lots of points (and which lots each withdrawal consumed), expiries and
reversals in the ledger.

Revision ID: loyalty_0007
Revises: loyalty_0006
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "loyalty_0007"
down_revision: str | None = "loyalty_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_KINDS = "kind IN ('deposit', 'withdrawal', 'expiry', 'reversal')"


def upgrade() -> None:
    op.create_table(
        "lots",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.Uuid(), sa.ForeignKey("accounts.user_id"), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_lots_amount_positive"),
        sa.CheckConstraint("remaining >= 0 AND remaining <= amount",
                           name="ck_lots_remaining_within_amount"),
        sa.UniqueConstraint("entry_id", name="uq_lots_entry_id"),
    )
    op.create_index("ix_lots_account_expires_at", "lots", ["account_id", "expires_at", "id"])
    op.create_table(
        "lot_consumptions",
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("lot_id", sa.BigInteger(), sa.ForeignKey("lots.id"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("entry_id", "lot_id", name="pk_lot_consumptions"),
        sa.CheckConstraint("amount > 0", name="ck_lot_consumptions_amount_positive"),
    )
    # Null for every existing account: no lot exists yet.
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("next_expiry", _TS, nullable=True))
    op.create_index("ix_accounts_next_expiry", "accounts", ["next_expiry"])
    # Null for every existing entry: nothing was reversed yet.
    with op.batch_alter_table("ledger_entries") as batch:
        batch.add_column(sa.Column("reverses", sa.BigInteger(), nullable=True))
        batch.drop_constraint("ck_ledger_kind", type_="check")
        batch.create_check_constraint("ck_ledger_kind", _KINDS)
    # At most one reversal per entry, whatever races.
    op.create_index("uq_ledger_reverses", "ledger_entries", ["reverses"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_ledger_reverses", "ledger_entries")
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_constraint("ck_ledger_kind", type_="check")
        batch.create_check_constraint("ck_ledger_kind", "kind IN ('deposit', 'withdrawal')")
        batch.drop_column("reverses")
    op.drop_index("ix_accounts_next_expiry", "accounts")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("next_expiry")
    op.drop_table("lot_consumptions")
    op.drop_index("ix_lots_account_expires_at", "lots")
    op.drop_table("lots")
