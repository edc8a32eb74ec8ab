"""sso's HTTP request and response bodies."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints, field_validator
from pydantic.networks import validate_email

from authloyalty.platform.db import utcnow
from authloyalty.platform.schemas import Body, StrictText, Token

Email = Annotated[str, Field(strict=True, max_length=254, examples=["ann@example.com"])]
Password = Annotated[str, Field(strict=True, min_length=1, max_length=128,
                                examples=["correct horse battery"])]


def _check_email(value: str) -> str:
    value = value.strip()
    if len(value) > 254:
        raise ValueError("must be at most 254 characters")
    try:
        validate_email(value)
    except Exception as exc:
        raise ValueError("not a valid email address") from exc
    return value


class RegisterIn(Body):
    """``POST /auth/registration``."""

    email: Email
    password: Password
    name: Annotated[str, Field(strict=True), StringConstraints(strip_whitespace=True,
                                                               max_length=100)] | None = None
    birthday: Annotated[StrictText | None, Field(examples=["1990-05-17"],
                                                 description="YYYY-MM-DD, in the past")] = None

    _email = field_validator("email")(_check_email)

    @field_validator("birthday")
    @classmethod
    def _birthday(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parsed = date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError("must be a date in YYYY-MM-DD format") from exc
        if len(value) != 10:
            raise ValueError("must be a date in YYYY-MM-DD format")
        if parsed >= utcnow().date():
            raise ValueError("must be in the past")
        return value

    def birthday_date(self) -> date | None:
        """The birthday as a date."""
        return date.fromisoformat(self.birthday) if self.birthday else None


class LoginIn(Body):
    """``POST /auth/login``."""

    email: Email
    password: Password

    _email = field_validator("email")(_check_email)


class TokenIn(Body):
    """``POST /auth/refresh`` and ``POST /auth/logout``."""

    token: Annotated[Token, Field(description="A refresh token (refresh) or either token "
                                              "(logout)")]


class TokensOut(BaseModel):
    """Registration, login and refresh answer."""

    status: str = "Success"
    user_id: str
    access_token: str
    refresh_token: str


class UserInfoOut(BaseModel):
    """``GET /auth/info``."""

    status: str = "Success"
    user_id: str
    email: str
    name: str | None
    birthday: str | None
    is_admin: bool
