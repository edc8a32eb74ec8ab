"""The hand-resolved hot routes answer exactly like FastAPI-resolved ones.

``POST /loyalty/me/withdrawals`` is served by a hand-written resolver; the admin withdrawal
route takes the same body and the same ``Idempotency-Key`` header through FastAPI's own
resolution. For an admin acting on their own account, every bad request must get the same
status, code and field list from both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from authloyalty.bootstrap import build_embedded, loyalty_app
from authloyalty.sso.service import Registration
from tests.conftest import FAST_ARGON2, settings_for

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def admin_client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str],
                                                               str]]:
    system = build_embedded(settings_for(tmp_path, sso={"argon2": FAST_ARGON2.model_dump()}))
    await system.migrate()
    try:
        issued = await system.sso.service.register(
            Registration("admin@example.com", "long enough"), is_admin=True)
        await system.sso.relay.run_once()
        auth = {"Authorization": f"Bearer {issued.tokens.access_token}"}
        transport = httpx.ASGITransport(app=loyalty_app(system.loyalty))
        async with httpx.AsyncClient(transport=transport, base_url="http://loyalty") as client:
            yield client, auth, str(issued.user_id)
    finally:
        await system.stop()


CASES: list[tuple[str, dict[str, str], bytes | None]] = [
    ("no body", JSON, None),
    ("empty object", JSON, b"{}"),
    ("malformed JSON", JSON, b'{"amount": 1,'),
    ("JSON array", JSON, b"[1]"),
    ("huge number", JSON, b'{"amount": 1' + b"0" * 5000 + b', "comment": "x"}'),
    ("deep nesting", JSON, b"[" * 30000),
    ("no content type", {}, b'{"amount": 1, "comment": "x"}'),
    ("form content type", {"Content-Type": "application/x-www-form-urlencoded"},
     b"amount=1&comment=x"),
    ("vendor JSON type", {"Content-Type": "application/vnd.api+json"},
     b'{"amount": 0, "comment": "x"}'),
    ("zero amount", JSON, b'{"amount": 0, "comment": "x"}'),
    ("string amount", JSON, b'{"amount": "ten", "comment": "x"}'),
    ("fractional amount", JSON, b'{"amount": 1.5, "comment": "x"}'),
    ("unknown field", JSON, b'{"amount": 1, "comment": "x", "extra": true}'),
    ("comment too long", JSON, b'{"amount": 1, "comment": "' + b"c" * 300 + b'"}'),
    ("too much", JSON, b'{"amount": 1000000, "comment": "x"}'),
    ("bad key", {**JSON, "Idempotency-Key": "has space"}, b'{"amount": 1, "comment": "x"}'),
    ("bad key and body", {**JSON, "Idempotency-Key": "k" * 256}, b'{"amount": -1}'),
    ("no token", {"Authorization": "", **JSON}, b'{"amount": 1, "comment": "x"}'),
    ("bad token", {"Authorization": "Bearer nope", **JSON}, b'{"amount": 1, "comment": "x"}'),
]


def _shape(reply: httpx.Response) -> tuple[int, Any, Any, Any]:
    body = reply.json()
    return reply.status_code, body.get("code"), body.get("fields"), body.get("error")


@pytest.mark.parametrize(("name", "headers", "content"), CASES, ids=[c[0] for c in CASES])
async def test_bad_withdrawals_get_the_same_answer_on_both_routes(
        admin_client: tuple[httpx.AsyncClient, dict[str, str], str], name: str,
        headers: dict[str, str], content: bytes | None) -> None:
    client, auth, user_id = admin_client
    sent = {**auth, **headers}
    resolved = await client.post("/loyalty/me/withdrawals", headers=sent, content=content)
    standard = await client.post(f"/loyalty/admin/accounts/{user_id}/withdrawals",
                                 headers=sent, content=content)
    if resolved.status_code == 201:  # accepted by both (unknown fields are ignored)
        assert standard.status_code == 201, standard.text
        return
    assert _shape(resolved) == _shape(standard)


async def test_a_good_withdrawal_and_its_replay(
        admin_client: tuple[httpx.AsyncClient, dict[str, str], str]) -> None:
    client, auth, _ = admin_client
    headers = {**auth, "Idempotency-Key": "once"}
    first = await client.post("/loyalty/me/withdrawals", headers=headers,
                              json={"amount": 30, "comment": "coffee"})
    again = await client.post("/loyalty/me/withdrawals", headers=headers,
                              json={"amount": 30, "comment": "coffee"})
    assert first.status_code == 201
    assert first.json()["balance"] == 70
    assert again.content == first.content
    assert (await client.get("/loyalty/me", headers=auth)).json()["balance"] == 70
