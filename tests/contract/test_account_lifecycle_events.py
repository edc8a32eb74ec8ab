"""loyalty applies a user's deletions and restores by their lifecycle version, not by arrival
order: the outbox relay retries a failed row while later ones go out, and several sso replicas
relay at once, so a restore may arrive before the deletion it undoes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from authloyalty.events import UserDeleted, UserRegistered, UserRestored
from authloyalty.loyalty.consumer import LoyaltyEventHandlers
from authloyalty.loyalty.domain import Account
from authloyalty.loyalty.revocations import RevokedSessions
from authloyalty.platform.bus import Envelope
from tests.contract.conftest import Factory

AT = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
BONUS = 100


def handlers(loyalty_uow: Factory) -> LoyaltyEventHandlers:
    return LoyaltyEventHandlers(loyalty_uow, RevokedSessions(), BONUS, clock=lambda: AT)


async def deliver(handlers: LoyaltyEventHandlers, *envelopes: Envelope[Any]) -> None:
    by_event = handlers.by_event()
    for envelope in envelopes:
        await by_event[type(envelope.event)](envelope)


async def account(loyalty_uow: Factory, user_id: UUID) -> Account:
    async with loyalty_uow() as uow:
        found: Account | None = await uow.accounts.get(user_id)
        total = await uow.ledger.total(user_id)
    assert found is not None
    assert total == found.balance
    return found


async def test_a_restore_handled_before_its_deletion_leaves_the_account_active(
        loyalty_uow: Factory) -> None:
    user, on = uuid4(), handlers(loyalty_uow)
    registered = Envelope(UserRegistered(user))
    deleted = Envelope(UserDeleted(user, AT, version=1))
    restored = Envelope(UserRestored(user, AT, version=2))
    await deliver(on, registered, restored, deleted)
    assert (await account(loyalty_uow, user)).state == "active"
    # The same events delivered again (the inbox knows them) change nothing.
    await deliver(on, deleted, restored, deleted, registered)
    after = await account(loyalty_uow, user)
    assert (after.state, after.balance) == ("active", BONUS)
    # A later deletion still freezes it.
    await deliver(on, Envelope(UserDeleted(user, AT, version=3)))
    assert (await account(loyalty_uow, user)).state == "frozen"


async def test_the_same_change_under_a_new_event_id_changes_nothing(
        loyalty_uow: Factory) -> None:
    user, on = uuid4(), handlers(loyalty_uow)
    await deliver(on, Envelope(UserRestored(user, AT, version=2)),
                  Envelope(UserDeleted(user, AT, version=1)),
                  Envelope(UserDeleted(user, AT, version=1)))
    assert (await account(loyalty_uow, user)).state == "active"


async def test_a_deletion_before_the_registration_opens_the_account_once_and_freezes_it(
        loyalty_uow: Factory) -> None:
    user, on = uuid4(), handlers(loyalty_uow)
    await deliver(on, Envelope(UserDeleted(user, AT, version=1)),
                  Envelope(UserRegistered(user)))
    frozen = await account(loyalty_uow, user)
    assert (frozen.state, frozen.frozen_at, frozen.balance) == ("frozen", AT, BONUS)


async def test_unversioned_changes_from_an_older_sso_apply_in_arrival_order(
        loyalty_uow: Factory) -> None:
    user, on = uuid4(), handlers(loyalty_uow)
    await deliver(on, Envelope(UserRegistered(user)), Envelope(UserDeleted(user, AT)))
    assert (await account(loyalty_uow, user)).state == "frozen"
    await deliver(on, Envelope(UserRestored(user, AT)))
    assert (await account(loyalty_uow, user)).state == "active"
    # Once a versioned change is applied, an unversioned one can no longer undo it.
    await deliver(on, Envelope(UserDeleted(user, AT, version=1)),
                  Envelope(UserRestored(user, AT)))
    assert (await account(loyalty_uow, user)).state == "frozen"
