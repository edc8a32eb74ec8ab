"""sso's HTTP request and response bodies."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, field_validator

from authloyalty.platform.clock import utcnow
from authloyalty.platform.schemas import (
    Body,
    StrictText,
    Token,
    single_line_text,
    unicode_text,
)
from authloyalty.sso.domain import canonical_email, email_problem

# Examples prefill Swagger UI's "Try it out"; a neutral address, not the README's.
Email = Annotated[str, Field(strict=True, max_length=254,
                             examples=["alex.morgan@example.com"])]
Password = Annotated[str, Field(strict=True, min_length=1, max_length=128,
                                examples=["correct horse battery"]),
                     AfterValidator(unicode_text)]
Name = Annotated[str, Field(strict=True),
                 StringConstraints(strip_whitespace=True, max_length=100),
                 AfterValidator(single_line_text)]


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _check_email(value: str) -> str:
    problem = email_problem(value)
    if problem:
        raise ValueError(problem)
    return canonical_email(value)


class RegisterIn(Body):
    """``POST /auth/registration``."""

    email: Email
    password: Password
    name: Annotated[Name | None, Field(examples=["Alex Morgan"])] = None
    birthday: Annotated[StrictText | None, Field(examples=["1990-05-17"],
                                                 description="YYYY-MM-DD, in the past")] = None

    _email = field_validator("email")(_check_email)

    @field_validator("name")
    @classmethod
    def _blank_name_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("birthday")
    @classmethod
    def _birthday(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            if not _ISO_DATE.fullmatch(value):
                raise ValueError(value)
            parsed = date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError("must be a date in YYYY-MM-DD format") from exc
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


class SessionOut(BaseModel):
    """One of the caller's active sessions."""

    id: str
    created_at: str
    last_used_at: str | None = Field(description="When the session was opened or last "
                                                 "refreshed (access-token use does not count)")
    user_agent: str | None
    ip: str | None
    current: bool = Field(description="True for the session of the token making the request")


class SessionsOut(BaseModel):
    """``GET /auth/sessions``: newest first."""

    status: str = "Success"
    items: list[SessionOut]


class EndedOut(BaseModel):
    """``DELETE /auth/sessions``."""

    status: str = "Success"
    ended: int


class PasswordChangeIn(Body):
    """``POST /auth/password``."""

    current_password: Password
    new_password: Password


class PasswordChangedOut(BaseModel):
    """``POST /auth/password``: the tokens of the new session."""

    status: str = "Success"
    access_token: str
    refresh_token: str


class AccountDeletionIn(Body):
    """``DELETE /auth/me``: the password confirms the deletion."""

    password: Password


class AdminUserOut(BaseModel):
    """A user as admins see them."""

    user_id: str
    email: str | None = Field(description="null once the personal data has been purged")
    name: str | None
    is_admin: bool
    created_at: str
    deleted_at: str | None = Field(description="When the user deleted the account; null "
                                               "while it is not deleted")
    purged_at: str | None = Field(description="When the deleted user's personal data (email, "
                                              "name, birthday, password) was erased; null "
                                              "until then")


class AdminUsersOut(BaseModel):
    """``GET /auth/admin/users``: ordered by email; pass ``next_cursor`` back for more."""

    status: str = "Success"
    items: list[AdminUserOut]
    next_cursor: str | None


class AdminUserDetailsOut(AdminUserOut):
    """``GET /auth/admin/users/{user_id}``."""

    status: str = "Success"
    sessions: int = Field(description="How many sessions of the user are active")


class AdminRightIn(Body):
    """``PUT /auth/admin/users/{user_id}/admin``."""

    is_admin: Annotated[bool, Field(strict=True)]
