"""loyalty's HTTP request and response bodies."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, Field

from authloyalty.platform.schemas import Amount, Body, Comment


class SeedOperationIn(Body):
    """``POST /loyalty``: the original's body; ``balance`` is the amount to move."""

    uuid: Annotated[UUID | None, Field(description="Target account; required for admins")] = None
    operation: Annotated[Literal["w", "d"], Field(description="w = withdraw, d = deposit")]
    comment: Comment
    balance: Annotated[Amount, Field(description="Amount of points, 1..10^9")]


class MovementIn(Body):
    """A deposit or withdrawal."""

    amount: Amount
    comment: Comment


class DepositIn(MovementIn):
    """A deposit; with ``expires_at``, its points expire then."""

    expires_at: Annotated[AwareDatetime | None, Field(
        description="RFC 3339 time in the future when these points expire (unspent ones "
                    "leave the balance as an `expiry` transaction); never by default")] = None


class ReversalIn(Body):
    """A reversal of a transaction."""

    comment: Comment


class ExpiringOut(BaseModel):
    """Points of one lot that expire at ``expires_at`` unless spent first."""

    amount: int
    expires_at: str


class BalanceOut(BaseModel):
    """An account's balance."""

    status: str = "Success"
    uuid: str
    balance: int


class AccountOut(BalanceOut):
    """Your account: the balance, and what holds leave of it."""

    available: int = Field(description="balance less the points of unexpired holds: what "
                                       "withdrawals and new holds may take")
    held: int = Field(description="points reserved by unexpired holds")
    expiring: list[ExpiringOut] = Field(
        description="the next points to expire, soonest first (at most 5)")


class OwnerOut(BaseModel):
    """The account owner as sso knows them."""

    user_id: str
    email: str
    name: str | None
    birthday: str | None
    is_admin: bool


class AdminAccountOut(AccountOut):
    """An account as admins see it."""

    owner: OwnerOut | None
    owner_status: Literal["ok", "not_found", "unavailable"]
    state: Literal["active", "frozen"] = Field(
        description="frozen while the user is deleted: no deposit or withdrawal")


class TransactionOut(BaseModel):
    """One movement of points."""

    id: int
    kind: Literal["deposit", "withdrawal", "expiry", "reversal"]
    amount: int
    comment: str
    balance_after: int
    created_at: str
    hold_id: int | None = Field(default=None, description="the hold a capture settled")
    reverses: int | None = Field(default=None, description="the transaction a reversal undid")


class MovementOut(BaseModel):
    """Answer to a deposit or withdrawal."""

    status: str = "Success"
    balance: int
    transaction: TransactionOut


class HistoryOut(BaseModel):
    """A page of history."""

    status: str = "Success"
    items: list[TransactionOut]
    next_cursor: str | None


class HoldIn(Body):
    """A hold: reserve points until captured, released or expired."""

    amount: Amount
    comment: Comment
    ttl_seconds: Annotated[int | None, Field(
        strict=True, ge=1, description="How long the hold lasts; 900 by default, at most "
                                       "loyalty.max_hold_ttl_seconds (7 days by default)")] = None


class CaptureIn(Body):
    """A capture: withdraw the hold's points (or ``amount`` of them; the rest released)."""

    amount: Annotated[int | None, Field(strict=True, ge=1, le=1_000_000_000,
                                        description="At most the held amount; all by default")
                      ] = None


class HoldOut(BaseModel):
    """A hold; ``state`` as of the answer (a hold past ``expires_at`` is ``expired``)."""

    id: int
    amount: int
    captured_amount: int
    comment: str
    state: Literal["held", "captured", "released", "expired"]
    expires_at: str
    created_at: str


class HoldAnswerOut(BaseModel):
    """Answer to a hold or a release."""

    status: str = "Success"
    hold: HoldOut
    balance: int
    available: int


class CaptureOut(HoldAnswerOut):
    """Answer to a capture: the withdrawal it wrote."""

    transaction: TransactionOut


class HoldsOut(BaseModel):
    """A page of holds."""

    status: str = "Success"
    items: list[HoldOut]
    next_cursor: str | None
