"""The audit log as the use cases write and read it, over the fake stores."""

from __future__ import annotations

from uuid import uuid4

import pytest
from structlog.contextvars import bound_contextvars

from authloyalty.loyalty.domain import InsufficientPoints, Principal
from authloyalty.loyalty.service import LedgerService, Operation
from authloyalty.platform.audit import AuditQuery
from authloyalty.platform.errors import Forbidden, ValidationFailed
from authloyalty.sso.domain import LastAdmin, UserNotFound
from authloyalty.sso.service import AuthService, Registration
from tests.fakes import FakeLoyaltyStore, FakeSsoStore
from tests.unit.test_auth_service import Clock


def _actions(store: FakeSsoStore | FakeLoyaltyStore) -> list[str]:
    return [entry.record.action for entry in store.state.audit]


# --- refusals first -------------------------------------------------------------------------

async def test_reading_the_log_is_for_admins_and_a_bad_cursor_is_refused(
        service: AuthService) -> None:
    user = await service.register(Registration("u@example.com", "long enough"))
    admin = await service.register(Registration("a@example.com", "long enough"), is_admin=True)
    with pytest.raises(Forbidden):
        await service.audit(user.tokens.access_token, AuditQuery(), 10, None)
    with pytest.raises(ValidationFailed):
        await service.audit(admin.tokens.access_token, AuditQuery(), 10, "abc")
    with pytest.raises(Forbidden):
        await LedgerService(FakeLoyaltyStore().uow).audit(
            Principal(uuid4(), uuid4(), False), AuditQuery(), 10, None)


async def test_refused_admin_actions_write_nothing(service: AuthService,
                                                   store: FakeSsoStore) -> None:
    root = await service.register(Registration("r@example.com", "long enough"), is_admin=True)
    user = await service.register(Registration("u@example.com", "long enough"))
    with pytest.raises(LastAdmin):
        await service.set_admin_right(root.tokens.access_token, root.user_id, False)
    with pytest.raises(UserNotFound):
        await service.revoke_sessions_of(root.tokens.access_token, uuid4())
    with pytest.raises(Forbidden):
        await service.set_admin_right(user.tokens.access_token, user.user_id, True)
    loyalty = FakeLoyaltyStore()
    ledger = LedgerService(loyalty.uow)
    async with loyalty.uow() as uow:
        await uow.accounts.open(user.user_id, Clock().now)
        await uow.commit()
    with pytest.raises(InsufficientPoints):
        await ledger.operate(Operation(Principal(root.user_id, uuid4(), True), user.user_id,
                                       "withdrawal", 1, "none left"))
    assert _actions(store) == []
    assert _actions(loyalty) == []


# --- the actions at work --------------------------------------------------------------------

async def test_the_start_up_admin_is_audited_only_when_it_changes_something(
        service: AuthService, store: FakeSsoStore) -> None:
    await service.ensure_admin("boot@example.com", "long enough")
    await service.ensure_admin("boot@example.com", "long enough")  # each start: no change
    await service.make_admin("boot@example.com", "long enough")  # the command: recorded
    assert [(e.record.action, e.record.actor_id, e.record.actor_kind, e.record.outcome)
            for e in store.state.audit] == [
        ("create_admin", None, "cli", {"result": "created", "password_reset": False}),
        ("create_admin", None, "cli", {"result": "unchanged", "password_reset": False}),
    ]


async def test_a_row_carries_the_request_id_bound_for_the_request(
        service: AuthService, store: FakeSsoStore) -> None:
    root = await service.register(Registration("r@example.com", "long enough"), is_admin=True)
    user = await service.register(Registration("u@example.com", "long enough"))
    with bound_contextvars(request_id="req-42"):
        assert await service.revoke_sessions_of(root.tokens.access_token, user.user_id) == 1
    [entry] = store.state.audit
    assert (entry.record.actor_id, entry.record.target_id, entry.record.request_id) == (
        root.user_id, user.user_id, "req-42")
    page = await service.audit(root.tokens.access_token, AuditQuery(target_id=user.user_id),
                               10, None)
    assert page.items == [entry]
    assert page.next_cursor is None
