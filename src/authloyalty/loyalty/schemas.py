"""loyalty's HTTP request and response bodies."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, Field

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


class BalanceOut(BaseModel):
    """An account's balance."""

    status: str = "Success"
    uuid: str
    balance: int


class OwnerOut(BaseModel):
    """The account owner as sso knows them."""

    user_id: str
    email: str
    name: str | None
    birthday: str | None
    is_admin: bool


class AdminAccountOut(BalanceOut):
    """An account as admins see it."""

    owner: OwnerOut | None
    owner_status: Literal["ok", "not_found", "unavailable"]
    state: Literal["active", "frozen"] = Field(
        description="frozen while the user is deleted: no deposit or withdrawal")


class TransactionOut(BaseModel):
    """One movement of points."""

    id: int
    kind: Literal["deposit", "withdrawal"]
    amount: int
    comment: str
    balance_after: int
    created_at: str


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
