"""loyalty: the lifecycle version of the newest deletion or restore applied to each account,
so that an older one arriving late changes nothing.

Revision ID: loyalty_0005
Revises: loyalty_0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "loyalty_0005"
down_revision: str | None = "loyalty_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # 0 for every existing account: only unversioned changes were applied so far.
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("lifecycle_version", sa.BigInteger(), nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("lifecycle_version")
