"""The bearer token of a request, as both services read it."""

from __future__ import annotations

from typing import Any

from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection
from starlette.types import Scope

from authloyalty.platform.errors import MissingToken

# Shown in Swagger UI's Authorize dialog.
AUTHORIZE_HELP = ("Paste the `access_token` of a `POST /auth/registration` or "
                  "`POST /auth/login` answer (the token alone; `Bearer <token>` works too).")


class BearerToken(HTTPBearer):
    """``Authorization: Bearer <jwt>`` or, as the original accepted, a bare ``<jwt>``.

    Declared as HTTP bearer in OpenAPI so Swagger UI's Authorize button adds the prefix.
    """

    def __init__(self) -> None:
        # One scheme name for subclasses too (loyalty's caller dependency is one).
        super().__init__(auto_error=False, scheme_name="BearerToken",
                         description=AUTHORIZE_HELP)

    async def __call__(self, request: HTTPConnection) -> Any:  # returns the raw token
        return bearer_token(request.scope)


def bearer_token(scope: Scope) -> str:
    """The token of the ``Authorization`` header (``Bearer <jwt>`` or a bare ``<jwt>``), read
    straight from the ASGI scope; :class:`MissingToken` without one.

    One more ``Bearer `` prefix is dropped too: Swagger UI's Authorize dialog adds its own, so
    a pasted ``Bearer <jwt>`` arrives as ``Bearer Bearer <jwt>``. A JWT holds no space, so
    nothing that could be a token loses anything."""
    header = ""
    for key, value in scope["headers"]:
        if key == b"authorization":  # ASGI servers lower-case header names
            header = value.decode("latin-1").strip()
            break
    scheme, _, rest = header.partition(" ")
    token = rest.strip() if scheme.lower() == "bearer" else header
    scheme, space, rest = token.partition(" ")
    if space and scheme.lower() == "bearer":
        token = rest.strip()
    if not token:
        raise MissingToken()
    return token
