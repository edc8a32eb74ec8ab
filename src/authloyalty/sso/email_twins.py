"""Existing users whose emails become one address under the current comparison rules.

Emails are unique in :func:`~authloyalty.sso.domain.normalise_email`'s form. When that form
changes (NFC was added to it: ``josé`` with a precomposed ``é`` and with ``e`` + a combining
accent used to be two addresses), stored rows are brought to the new form by a migration,
except rows that would then collide: those are two accounts a person may both use, and no
rule can tell which to keep, so they are left as they are and reported by
``authloyalty migrate`` for an operator to resolve (never merged silently).
"""

from __future__ import annotations

from collections import defaultdict
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy import Connection

from authloyalty.sso.domain import normalise_email

_USERS = sa.table("users", sa.column("id", sa.Uuid()), sa.column("email_normalized", sa.String()))


def _forms(connection: Connection) -> dict[str, list[tuple[UUID, str]]]:
    groups: dict[str, list[tuple[UUID, str]]] = defaultdict(list)
    rows = connection.execute(sa.select(_USERS.c.id, _USERS.c.email_normalized))
    for user_id, stored in rows:
        groups[normalise_email(stored)].append((user_id, stored))
    return groups


def renormalise(connection: Connection) -> list[list[UUID]]:
    """Store every email in the current form unless it collides; the colliding groups."""
    twins: list[list[UUID]] = []
    for form, members in _forms(connection).items():
        if len(members) > 1:
            twins.append(sorted(user_id for user_id, _ in members))
            continue
        user_id, stored = members[0]
        if stored != form:
            connection.execute(sa.update(_USERS).where(_USERS.c.id == user_id)
                               .values(email_normalized=form))
    return twins


def find_twins(connection: Connection) -> list[list[UUID]]:
    """Groups of user ids whose emails are one address in the current form."""
    return [sorted(user_id for user_id, _ in members)
            for members in _forms(connection).values() if len(members) > 1]
