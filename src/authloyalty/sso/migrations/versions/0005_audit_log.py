"""sso: the audit log of admin actions (who, what, on whom, when, the request id, the outcome).

Revision ID: sso_0005
Revises: sso_0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "sso_0005"
down_revision: str | None = "sso_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_id", sa.Uuid(), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("outcome", sa.JSON(), nullable=False),
    )
    op.create_index("ix_audit_log_actor", "audit_log", ["actor_id", "id"])
    op.create_index("ix_audit_log_target", "audit_log", ["target_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_target", "audit_log")
    op.drop_index("ix_audit_log_actor", "audit_log")
    op.drop_table("audit_log")
