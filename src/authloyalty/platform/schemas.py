"""Field types shared by the HTTP schemas of both services."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic.json_schema import SkipJsonSchema

# Text fields are checked once here, for HTTP and gRPC alike (gRPC builds these models too),
# before anything reaches a database: PostgreSQL cannot store NUL in text, a lone surrogate
# (JSON's "\ud800") cannot be encoded to UTF-8 at all, and control characters in a name or
# a comment only ever hide something from the person who reads it later.
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0, DEL, C1
_CONTROL_BUT_BREAKS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def unicode_text(value: str) -> str:
    """Any text that is valid Unicode (no lone surrogates); NUL allowed (for passwords,
    which are hashed as UTF-8 and never stored as text)."""
    if _SURROGATE.search(value):
        raise ValueError("must be valid Unicode text (no lone surrogate code points)")
    return value


def single_line_text(value: str) -> str:
    """Valid Unicode without control characters (NUL, line breaks, tabs, ...)."""
    unicode_text(value)
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters such as NUL or line breaks")
    return value


def multiline_text(value: str) -> str:
    """Valid Unicode without control characters other than tab, line feed, carriage return."""
    unicode_text(value)
    if _CONTROL_BUT_BREAKS.search(value):
        raise ValueError("must not contain control characters such as NUL "
                         "(tab and line breaks are allowed)")
    return value


StrictText = Annotated[str, Field(strict=True)]
Comment = Annotated[str, Field(strict=True), StringConstraints(strip_whitespace=True,
                                                               min_length=1, max_length=255),
                    AfterValidator(multiline_text)]
Amount = Annotated[int, Field(strict=True, ge=1, le=1_000_000_000)]
Token = Annotated[str, Field(strict=True), StringConstraints(strip_whitespace=True,
                                                             min_length=1, max_length=8192)]


class Body(BaseModel):
    """Base of request bodies: unknown keys are ignored, as the original did."""

    model_config = ConfigDict(extra="ignore")


class StatusOut(BaseModel):
    """``{"status": "Success"}``."""

    status: str = "Success"


class FieldErrorOut(BaseModel):
    """One field a request was refused for."""

    field: str
    message: str


class ErrorOut(BaseModel):
    """The error envelope."""

    status: str = "Error"
    error: str
    code: str
    # Present on a 422 validation_error only and never null, so the schema names neither a
    # null type nor a default.
    fields: Annotated[list[FieldErrorOut] | SkipJsonSchema[None], Field(
        description="422 validation_error only: each field refused, and why",
        json_schema_extra=lambda schema: schema.pop("default", None))] = None


ERROR_DESCRIPTIONS = {
    400: "The body is not valid JSON",
    401: "No access token, or one that is invalid, expired or of an ended session",
    403: "The token is valid but its user may not do this",
    404: "No such account, user or session",
    409: "A conflict: the email is taken, too few points, or the Idempotency-Key was used "
         "for another request",
    410: "The user was deleted and their personal data erased: it cannot be restored",
    413: "The body is larger than the limit",
    422: "A field is missing or invalid (`fields` says which)",
    429: "Too many failed attempts; `Retry-After` says when to try again",
    503: "The database, or loyalty's view of ended sessions, is not available yet; "
         "`Retry-After` says when to try again",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: the error envelope for each status it can answer with
    (and only those, so Swagger UI lists no error a route cannot return)."""
    return {code: {"model": ErrorOut, "description": ERROR_DESCRIPTIONS[code]}
            for code in sorted(codes)}


# A route that reads a JSON body can also answer: malformed JSON, too large, invalid fields.
BODY_ERRORS = (400, 413, 422)
