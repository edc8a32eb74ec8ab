"""loyalty: idempotency keys store the result (the ledger entry), not the rendered answer.

Rows written before keep their status code and body and replay them until they expire;
new rows leave both empty and fill ``result``.

Revision ID: loyalty_0002
Revises: loyalty_0001
Create Date: 2027-01-12
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "loyalty_0002"
down_revision: str | None = "loyalty_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("result", sa.Text(), nullable=True))
        batch.alter_column("status_code", existing_type=sa.Integer(), nullable=True)
        batch.alter_column("response_body", existing_type=sa.LargeBinary(), nullable=True)


def downgrade() -> None:
    # Rows with a result have no answer to keep: a downgraded service could not replay them.
    op.execute("DELETE FROM idempotency_keys WHERE result IS NOT NULL")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.alter_column("response_body", existing_type=sa.LargeBinary(), nullable=False)
        batch.alter_column("status_code", existing_type=sa.Integer(), nullable=False)
        batch.drop_column("result")
