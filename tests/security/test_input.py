"""Bad text never reaches a database and never fails anyone else's request: one validation per
field for HTTP (422 naming the field) and gRPC (INVALID_ARGUMENT), same limits on both."""

from __future__ import annotations

import asyncio
import json
import unicodedata
from typing import Any

import grpc
import httpx
import pytest

from authloyalty.rpc.sso import sso_pb2, sso_pb2_grpc
from tests.e2e.e2e_helpers import PASSWORD, Account, Api, bearer, error_code, history, unique_email

pytestmark = pytest.mark.e2e

NUL_COMMENT = "a\x00b"


def as_json(body: dict[str, Any]) -> dict[str, Any]:
    """Request arguments sending ``body`` as ASCII JSON: a lone surrogate travels as the
    escape ``\\ud800``, exactly as a client's JSON library may send it."""
    return {"content": json.dumps(body), "headers": {"Content-Type": "application/json"}}


def assert_field_refused(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    assert error_code(response) == "validation_error"
    assert field in [f["field"] for f in response.json()["fields"]], response.text


def movement_routes(api: Api, user: Account, admin: dict[str, str]
                    ) -> list[tuple[str, str, dict[str, str], dict[str, Any]]]:
    """(name, url, headers, body with a placeholder comment) of every route that moves points."""
    account = f"{api.srv.loyalty}/loyalty/admin/accounts/{user.user_id}"
    return [
        ("my withdrawal", f"{api.srv.loyalty}/loyalty/me/withdrawals", user.auth,
         {"amount": 1}),
        ("admin deposit", f"{account}/deposits", admin, {"amount": 1}),
        ("admin withdrawal", f"{account}/withdrawals", admin, {"amount": 1}),
        ("original, user withdraws", f"{api.srv.loyalty}/loyalty", user.auth,
         {"operation": "w", "balance": 1}),
        ("original, admin deposits", f"{api.srv.loyalty}/loyalty", admin,
         {"operation": "d", "balance": 1, "uuid": user.user_id}),
    ]


@pytest.mark.parametrize("comment", [NUL_COMMENT, "bell\x07", "\ud800 lone surrogate",
                                     "c1 \x85 control"])
def test_bad_text_in_a_comment_is_a_422_on_every_movement_route(
        api: Api, admin_auth: dict[str, str], comment: str) -> None:
    user = api.user()
    for with_key in (False, True):
        for name, url, headers, body in movement_routes(api, user, admin_auth):
            extra = {"Idempotency-Key": f"k-{name}-{comment!r}"} if with_key else {}
            raw = as_json({**body, "comment": comment})
            r = api.http.post(url, content=raw["content"],
                              headers={**headers, **extra, **raw["headers"]})
            assert r.status_code == 422, (name, with_key, r.text)
            assert "comment" in r.text, (name, r.text)
    assert api.balance(user) == 100  # nothing was applied
    ok = api.http.post(f"{api.srv.loyalty}/loyalty/me/withdrawals", headers=user.auth,
                       json={"amount": 1, "comment": "line one\nline two\ttabbed"})
    assert ok.status_code == 201, ok.text  # tab and line breaks are text


def test_one_poisoned_withdrawal_among_many_fails_only_itself(api: Api) -> None:
    users = [api.user() for _ in range(12)]
    for _round in range(3):
        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                calls = [client.post(f"{api.srv.loyalty}/loyalty/me/withdrawals",
                                     headers=u.auth, json={"amount": 1, "comment": "coffee"})
                         for u in users]
                calls.insert(6, client.post(
                    f"{api.srv.loyalty}/loyalty/me/withdrawals", headers=users[0].auth,
                    json={"amount": 1, "comment": NUL_COMMENT}))
                return list(await asyncio.gather(*calls))

        answers = asyncio.run(burst())
        statuses = [r.status_code for r in answers]
        assert statuses[6] == 422, statuses
        assert statuses.count(422) == 1, statuses
        assert statuses.count(201) == 12, statuses
    for user in users:
        items = history(api, user.auth)
        total = sum(i["amount"] if i["kind"] == "deposit" else -i["amount"] for i in items)
        assert api.balance(user) == total == 97


def test_bad_text_in_registration_fields_is_a_422_naming_the_field(api: Api) -> None:
    for field, value in (("name", "Ann\x00"), ("name", "two\nlines"),
                         ("email", "a\x00b@example.com"), ("password", "pass\ud800word"),
                         ("name", "x" * 101),
                         ("email", "x" * 250 + "@example.com")):
        body = {"email": unique_email(), "password": PASSWORD, field: value}
        r = api.sso("POST", "/auth/registration", **as_json(body))
        assert_field_refused(r, field)


def test_a_password_may_hold_nul_it_is_hashed_never_stored_as_text(api: Api) -> None:
    email = unique_email("nul")
    api.register(email=email, password="before\x00after")
    assert api.sso("POST", "/auth/login", json={"email": email, "password": "before\x00after"}
                   ).status_code == 200
    assert api.sso("POST", "/auth/login", json={"email": email, "password": "before"}
                   ).status_code == 401


async def test_grpc_applies_the_same_rules_as_http(channel: grpc.aio.Channel) -> None:
    stub = sso_pb2_grpc.AuthStub(channel)
    email = unique_email("grpc")
    bad_calls = [
        stub.Register(sso_pb2.RegisterRequest(email=email, password=PASSWORD, name="Ann\x00")),
        stub.Register(sso_pb2.RegisterRequest(email="a\x00b@example.com", password=PASSWORD)),
        stub.Register(sso_pb2.RegisterRequest(email="x" * 300 + "@example.com",
                                              password=PASSWORD)),
        stub.Register(sso_pb2.RegisterRequest(email=email, password="p" * 1_000_000)),
        stub.Register(sso_pb2.RegisterRequest(email=email, password=PASSWORD,
                                              name="n" * 1_000_000)),
        stub.Login(sso_pb2.LoginRequest(email="a\x00b@example.com", password=PASSWORD)),
        stub.Login(sso_pb2.LoginRequest(email="x" * 300 + "@example.com", password=PASSWORD)),
        stub.Login(sso_pb2.LoginRequest(email="e" * 1_000_000, password=PASSWORD)),
        stub.Login(sso_pb2.LoginRequest(email=email, password="p" * 1_000_000)),
        stub.Refresh(sso_pb2.RefreshRequest(refresh_token="t" * 1_000_000)),
        stub.Logout(sso_pb2.LogoutRequest(token="t" * 1_000_000)),
    ]
    for call in bad_calls:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failure.value.details()
    # NUL in a password is allowed on both transports alike
    registered = await stub.Register(sso_pb2.RegisterRequest(email=email, password="a\x00b-long"))
    login = await stub.Login(sso_pb2.LoginRequest(email=email, password="a\x00b-long"))
    assert login.user_id == registered.user_id


def test_an_email_in_nfc_and_in_nfd_is_one_account(api: Api) -> None:
    local = f"josé-{unique_email('x').split('@')[0]}"
    nfc = unicodedata.normalize("NFC", f"{local}@example.com")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    account = api.register(email=nfc)
    twin = api.sso("POST", "/auth/registration", json={"email": nfd, "password": PASSWORD})
    assert twin.status_code == 409, twin.text
    assert api.login(nfd, PASSWORD).user_id == account.user_id
    info = api.sso("GET", "/auth/info", headers=bearer(account.access)).json()
    assert info["email"] == nfc


async def test_grpc_email_twins_are_one_account_too(channel: grpc.aio.Channel) -> None:
    stub = sso_pb2_grpc.AuthStub(channel)
    nfd = unicodedata.normalize("NFD", f"zoë-{unique_email('g')}")
    registered = await stub.Register(sso_pb2.RegisterRequest(email=nfd, password=PASSWORD))
    with pytest.raises(grpc.aio.AioRpcError) as twin:
        await stub.Register(sso_pb2.RegisterRequest(
            email=unicodedata.normalize("NFC", nfd), password=PASSWORD))
    assert twin.value.code() == grpc.StatusCode.ALREADY_EXISTS
    login = await stub.Login(sso_pb2.LoginRequest(email=unicodedata.normalize("NFC", nfd),
                                                  password=PASSWORD))
    assert login.user_id == registered.user_id
