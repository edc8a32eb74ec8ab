"""The audit log's HTTP shape, the same in both services: query parameters and answer."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Query
from pydantic import BaseModel, Field

from authloyalty.platform.audit import AuditEntry, AuditPage

ActorFilter = Annotated[UUID | None, Query(description="Only actions of this admin (user id)")]
TargetFilter = Annotated[UUID | None, Query(
    description="Only actions on this user (sso) or account (loyalty)")]
AuditLimit = Annotated[int, Query(ge=1, le=100)]
AuditCursor = Annotated[str | None, Query(max_length=32,
                                          description="`next_cursor` of the previous page")]


class AuditEntryOut(BaseModel):
    """One admin action."""

    id: int
    at: str
    actor: Annotated[str | None, Field(
        description="The admin's user id; null when `actor_kind` is `cli`")]
    actor_kind: Annotated[str, Field(description="`admin` (through the API) or `cli`")]
    action: str
    target: Annotated[str, Field(description="The user (sso) or account (loyalty) acted on")]
    request_id: Annotated[str | None, Field(
        description="The request's X-Request-Id; null outside HTTP")]
    outcome: Annotated[dict[str, int | bool | str | None], Field(
        description="What the action did: ids, counts, amounts and flags only")]


class AuditPageOut(BaseModel):
    """A page of the audit log, newest first; pass ``next_cursor`` back for more."""

    status: str = "Success"
    items: list[AuditEntryOut]
    next_cursor: str | None


def _entry_out(entry: AuditEntry) -> AuditEntryOut:
    r = entry.record
    return AuditEntryOut(
        id=entry.id, at=r.at.isoformat().replace("+00:00", "Z"),
        actor=str(r.actor_id) if r.actor_id else None, actor_kind=r.actor_kind,
        action=r.action, target=str(r.target_id), request_id=r.request_id,
        outcome=dict(r.outcome))


def audit_page_out(page: AuditPage) -> AuditPageOut:
    """The answer of ``GET /{service}/admin/audit``."""
    return AuditPageOut(items=[_entry_out(e) for e in page.items],
                        next_cursor=page.next_cursor)
