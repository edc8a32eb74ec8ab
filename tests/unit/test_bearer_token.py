"""How the ``Authorization`` header becomes a token, for both services."""

from __future__ import annotations

import pytest

from authloyalty.platform.errors import MissingToken
from authloyalty.platform.http.auth import bearer_token

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"


def _scope(value: str) -> dict[str, object]:
    return {"type": "http", "headers": [(b"authorization", value.encode("latin-1"))]}


@pytest.mark.parametrize("value", [
    JWT,                        # bare, as the original accepted
    f"Bearer {JWT}",
    f"bearer {JWT}",
    f"Bearer   {JWT}  ",
    # Swagger UI's Authorize dialog adds "Bearer " to whatever was pasted, "Bearer <jwt>" too.
    f"Bearer Bearer {JWT}",
    f"Bearer bearer {JWT}",
    f"BEARER  Bearer  {JWT}",
])
def test_the_token_is_found(value: str) -> None:
    assert bearer_token(_scope(value)) == JWT


@pytest.mark.parametrize(("value", "token"), [
    # Only one extra prefix goes: what remains is refused later as a malformed token.
    (f"Bearer Bearer Bearer {JWT}", f"Bearer {JWT}"),
    ("Bearer Bearer", "Bearer"),
    (f"Basic {JWT}", f"Basic {JWT}"),
])
def test_anything_else_is_left_for_the_verifier_to_refuse(value: str, token: str) -> None:
    assert bearer_token(_scope(value)) == token


@pytest.mark.parametrize("value", ["", "Bearer", "Bearer   "])
def test_no_token_is_missing_token(value: str) -> None:
    with pytest.raises(MissingToken):
        bearer_token(_scope(value))


def test_no_header_is_missing_token() -> None:
    with pytest.raises(MissingToken):
        bearer_token({"type": "http", "headers": []})
