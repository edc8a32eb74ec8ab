"""sso: emails compare in Unicode NFC (see authloyalty.sso.email_twins).

Revision ID: sso_0002
Revises: sso_0001
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

from authloyalty.sso.email_twins import renormalise

revision: str = "sso_0002"
down_revision: str | None = "sso_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Colliding rows stay as they are; `authloyalty migrate` reports them.
    renormalise(op.get_bind())


def downgrade() -> None:
    # The NFC form is a valid stored form for the old rules too: nothing to undo.
    pass
