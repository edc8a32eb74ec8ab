"""The base of every service's error hierarchy; free of HTTP and gRPC."""

from __future__ import annotations

from enum import Enum


class ErrorKind(Enum):
    """What went wrong, in terms any transport can map to its own status codes."""

    INVALID = "invalid"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    THROTTLED = "throttled"
    GONE = "gone"
    UNAVAILABLE = "unavailable"


class DomainError(Exception):
    """An expected failure of a use case, with a stable snake_case code for clients."""

    kind: ErrorKind = ErrorKind.INVALID
    code: str = "error"
    default_message: str = "request failed"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class InvalidToken(DomainError):
    """A token is malformed, expired, revoked, of the wrong type or badly signed."""

    kind = ErrorKind.UNAUTHENTICATED
    code = "invalid_token"
    default_message = "invalid or expired token"


class MissingToken(DomainError):
    """No bearer token was presented."""

    kind = ErrorKind.UNAUTHENTICATED
    code = "missing_token"
    default_message = "missing bearer token in the Authorization header"


class Forbidden(DomainError):
    """The caller is authenticated but may not do this."""

    kind = ErrorKind.FORBIDDEN
    code = "forbidden"
    default_message = "forbidden"


class ValidationFailed(DomainError):
    """Input that passed the schema but breaks a rule of the use case."""

    kind = ErrorKind.INVALID
    code = "validation_error"
    default_message = "invalid request"
