"""Client mistakes get the right status and error code, and never a 5xx."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.e2e_helpers import (
    PASSWORD,
    Account,
    Api,
    Server,
    bearer,
    error_code,
    history,
    no_5xx,
    unique_email,
)

pytestmark = pytest.mark.e2e

TOMORROW = (date.today() + timedelta(days=2)).isoformat()


# ---------------------------------------------------------------- registration validation

REGISTRATION_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("email not an address", {"email": "not-an-email"}, "email"),
    ("email without domain", {"email": "ann@"}, "email"),
    ("email too long", {"email": "a" * 64 + "@" + "b" * 186 + ".com"}, "email"),
    ("email a number", {"email": 12345}, "email"),
    ("email missing", {"email": None}, "email"),
    ("password 7 chars", {"password": "1234567"}, "password"),
    ("password empty", {"password": ""}, "password"),
    ("password 129 chars", {"password": "p" * 129}, "password"),
    ("password a number", {"password": 12345678}, "password"),
    ("password missing", {"password": None}, "password"),
    ("name 101 chars", {"name": "n" * 101}, "name"),
    ("name a number", {"name": 42}, "name"),
    ("birthday in the future", {"birthday": TOMORROW}, "birthday"),
    ("birthday dd.mm.yyyy", {"birthday": "17.05.1990"}, "birthday"),
    ("birthday without zero padding", {"birthday": "1990-5-17"}, "birthday"),
    ("birthday impossible date", {"birthday": "1990-02-30"}, "birthday"),
    ("birthday compact", {"birthday": "19900517"}, "birthday"),
    ("birthday ISO week date", {"birthday": "2020-W01-1"}, "birthday"),
    ("birthday with time", {"birthday": "1990-05-17T00:00:00"}, "birthday"),
    ("birthday a number", {"birthday": 19900517}, "birthday"),
]


@pytest.mark.parametrize(("body", "field"), [c[1:] for c in REGISTRATION_CASES],
                         ids=[c[0] for c in REGISTRATION_CASES])
def test_registration_validation(api: Api, body: dict[str, Any], field: str) -> None:
    payload: dict[str, Any] = {"email": unique_email("invalid"), "password": PASSWORD}
    payload.update(body)
    payload = {k: v for k, v in payload.items() if v is not None}
    r = api.sso("POST", "/auth/registration", json=payload)
    assert r.status_code == 422, r.text
    assert error_code(r) == "validation_error"
    assert field in r.json()["error"], r.json()["error"]


def test_limits_are_inclusive(api: Api) -> None:
    """The longest allowed values are accepted (the limits are not off by one)."""
    user = api.register(password="p" * 128, name="n" * 100, birthday="1900-01-01")
    r = api.sso("GET", "/auth/info", headers=user.auth)
    assert r.json()["name"] == "n" * 100
    assert api.login(user.email, "p" * 128).user_id == user.user_id
    api.register(password="8" * 8)


def test_refused_registration_creates_nothing(api: Api) -> None:
    email = unique_email("retry")
    r = api.sso("POST", "/auth/registration",
                json={"email": email, "password": PASSWORD, "birthday": TOMORROW})
    assert r.status_code == 422, r.text
    api.register(email=email)


def test_duplicate_email_differs_only_in_case(api: Api) -> None:
    email = unique_email("dup")
    first = api.register(email=email)
    r = api.sso("POST", "/auth/registration",
                json={"email": email.upper(), "password": "another password"})
    assert r.status_code == 409, r.text
    assert error_code(r) == "user_exists"
    # The first account is untouched: its password still works, the other does not.
    assert api.login(email, first.password).user_id == first.user_id
    r = api.sso("POST", "/auth/login", json={"email": email, "password": "another password"})
    assert r.status_code == 401, r.text


def test_parallel_duplicate_registrations(api: Api) -> None:
    email = unique_email("race")
    n = 5
    barrier = threading.Barrier(n)

    def attempt(i: int) -> httpx.Response:
        with httpx.Client(timeout=30.0, event_hooks={"response": [no_5xx]}) as client:
            barrier.wait(timeout=30)
            return client.post(f"{api.srv.sso}/auth/registration",
                               json={"email": email if i % 2 else email.upper(),
                                     "password": PASSWORD})

    with ThreadPoolExecutor(max_workers=n) as pool:
        responses = list(pool.map(attempt, range(n)))
    assert sorted(r.status_code for r in responses) == [201] + [409] * (n - 1), \
        [r.text for r in responses]
    assert all(error_code(r) == "user_exists" for r in responses if r.status_code == 409)


# ---------------------------------------------------------------- loyalty body validation

MOVEMENT_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("amount a string", {"amount": "10"}, "amount"),
    ("amount a float", {"amount": 1.5}, "amount"),
    ("amount zero", {"amount": 0}, "amount"),
    ("amount negative", {"amount": -5}, "amount"),
    ("amount over 10^9", {"amount": 10**9 + 1}, "amount"),
    ("amount huge", {"amount": 10**30}, "amount"),
    ("amount a bool", {"amount": True}, "amount"),
    ("amount missing", {"amount": None}, "amount"),
    ("comment empty", {"comment": ""}, "comment"),
    ("comment blank", {"comment": "   "}, "comment"),
    ("comment 256 chars", {"comment": "c" * 256}, "comment"),
    ("comment a number", {"comment": 5}, "comment"),
    ("comment missing", {"comment": None}, "comment"),
]


@pytest.mark.parametrize(("body", "field"), [c[1:] for c in MOVEMENT_CASES],
                         ids=[c[0] for c in MOVEMENT_CASES])
def test_withdrawal_validation(api: Api, admin: dict[str, str], body: dict[str, Any],
                               field: str) -> None:
    payload: dict[str, Any] = {"amount": 10, "comment": "valid"}
    payload.update(body)
    payload = {k: v for k, v in payload.items() if v is not None}
    # The admin's own account serves as target; nothing may change.
    before = api.balance_of(admin)
    for path in ("/loyalty/me/withdrawals", f"/loyalty/admin/accounts/{_uid(api, admin)}/deposits"):
        r = api.loy("POST", path, headers=admin, json=payload)
        assert r.status_code == 422, (path, r.text)
        assert error_code(r) == "validation_error"
        assert field in r.json()["error"], r.json()["error"]
    assert api.balance_of(admin) == before


SEED_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("balance a string", {"balance": "10"}, "balance"),
    ("balance a float", {"balance": 2.5}, "balance"),
    ("balance zero", {"balance": 0}, "balance"),
    ("balance over 10^9", {"balance": 10**9 + 1}, "balance"),
    ("balance missing", {"balance": None}, "balance"),
    ("operation unknown", {"operation": "x"}, "operation"),
    ("operation uppercase", {"operation": "W"}, "operation"),
    ("operation missing", {"operation": None}, "operation"),
    ("comment empty", {"comment": ""}, "comment"),
    ("comment 256 chars", {"comment": "c" * 256}, "comment"),
    ("uuid not a uuid", {"uuid": "not-a-uuid"}, "uuid"),
    ("uuid a number", {"uuid": 7}, "uuid"),
]


@pytest.mark.parametrize(("body", "field"), [c[1:] for c in SEED_CASES],
                         ids=[c[0] for c in SEED_CASES])
def test_seed_operation_validation(api: Api, admin: dict[str, str], body: dict[str, Any],
                                   field: str) -> None:
    payload: dict[str, Any] = {"uuid": _uid(api, admin), "operation": "w", "comment": "valid",
                               "balance": 1}
    payload.update(body)
    payload = {k: v for k, v in payload.items() if v is not None}
    before = api.balance_of(admin)
    r = api.loy("POST", "/loyalty", headers=admin, json=payload)
    assert r.status_code == 422, r.text
    assert error_code(r) == "validation_error"
    assert field in r.json()["error"], r.json()["error"]
    assert api.balance_of(admin) == before


def test_amount_limits_are_inclusive(api: Api, admin: dict[str, str]) -> None:
    user = api.user()
    r = api.loy("POST", f"/loyalty/admin/accounts/{user.user_id}/deposits", headers=admin,
                json={"amount": 10**9, "comment": "c" * 255})
    assert r.status_code == 201, r.text
    assert r.json()["balance"] == 10**9 + 100
    r = api.loy("POST", "/loyalty/me/withdrawals", headers=user.auth,
                json={"amount": 1, "comment": "x"})
    assert r.status_code == 201, r.text
    assert r.json()["balance"] == 10**9 + 99


def _uid(api: Api, headers: dict[str, str]) -> str:
    r = api.sso("GET", "/auth/info", headers=headers)
    assert r.status_code == 200, r.text
    uid: str = r.json()["user_id"]
    return uid


# ---------------------------------------------------------------- transport-level mistakes

@pytest.fixture(params=["sso", "loyalty"])
def post_target(request: pytest.FixtureRequest, api: Api) -> Iterator[tuple[str, dict[str, str]]]:
    """A JSON POST endpoint of each service, with the headers it needs."""
    if request.param == "sso":
        yield f"{api.srv.sso}/auth/login", {}
    else:
        user = api.register()
        yield f"{api.srv.loyalty}/loyalty/me/withdrawals", user.auth


def test_malformed_json(http: httpx.Client, post_target: tuple[str, dict[str, str]]) -> None:
    url, headers = post_target
    for raw in (b'{"email": ', b"{'a': 1}", b"\xff\xfe{}", b"{,}"):
        r = http.post(url, content=raw,
                      headers={**headers, "Content-Type": "application/json"})
        assert r.status_code == 400, (raw, r.text)
        assert error_code(r) == "validation_error", raw


def test_body_too_large(http: httpx.Client, post_target: tuple[str, dict[str, str]]) -> None:
    url, headers = post_target
    big = json.dumps({"email": "a@example.com", "password": PASSWORD, "comment": "x",
                      "amount": 1, "padding": "x" * (65 * 1024)})
    r = http.post(url, content=big, headers={**headers, "Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert error_code(r) == "payload_too_large"


def test_chunked_body_too_large(http: httpx.Client,
                                post_target: tuple[str, dict[str, str]]) -> None:
    """Without Content-Length the limit must hold too (bodies over 64 KiB get 413)."""
    url, headers = post_target

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        yield b'{"padding": "'
        for _ in range(70):
            yield b"x" * 1024
        yield b'"}'

    r = http.post(url, content=chunks(), headers={**headers, "Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert error_code(r) == "payload_too_large"


def test_body_just_under_the_limit_is_read(http: httpx.Client, api: Api) -> None:
    body = json.dumps({"email": unique_email(), "password": "wrong password",
                       "padding": "x" * (60 * 1024)})
    r = http.post(f"{api.srv.sso}/auth/login", content=body,
                  headers={"Content-Type": "application/json"})
    assert r.status_code == 401, r.text
    assert error_code(r) == "invalid_credentials"


@pytest.mark.parametrize("service", ["sso", "loyalty"])
def test_unknown_route_and_wrong_method(api: Api, service: str) -> None:
    call = api.sso if service == "sso" else api.loy
    prefix = "/auth" if service == "sso" else "/loyalty"
    r = call("GET", f"{prefix}/does/not/exist")
    assert r.status_code == 404, r.text
    assert error_code(r) == "not_found"
    r = call("GET", "/nothing-here")
    assert r.status_code == 404, r.text
    assert error_code(r) == "not_found"
    path = "/auth/login" if service == "sso" else "/loyalty/me/withdrawals"
    for method in ("GET", "PUT", "DELETE"):
        r = call(method, path)
        assert r.status_code == 405, (method, r.text)
        assert error_code(r) == "method_not_allowed"


# ---------------------------------------------------------------- authorization header

def test_missing_and_garbage_authorization(api: Api) -> None:
    for call, path in ((api.sso, "/auth/info"), (api.loy, "/loyalty/me")):
        r = call("GET", path)
        assert r.status_code == 401, r.text
        error_code(r)
        for value in ("Bearer", ""):
            r = call("GET", path, headers={"Authorization": value})
            assert r.status_code == 401, (value, r.text)
        for value in ("Bearer garbage", "garbage", "Bearer a.b.c", "Basic dXNlcjpwYXNz",
                      "Bearer " + "a" * 5000):
            r = call("GET", path, headers={"Authorization": value})
            assert r.status_code == 401, (value, r.text)
            assert error_code(r) == "invalid_token", value


def test_bare_and_lowercase_bearer_token_accepted(api: Api) -> None:
    user = api.user()
    # "Bearer Bearer <jwt>": a "Bearer <jwt>" pasted into Swagger UI's Authorize dialog.
    for value in (user.access, f"bearer {user.access}", f"Bearer   {user.access}",
                  f"Bearer Bearer {user.access}"):
        r = api.sso("GET", "/auth/info", headers={"Authorization": value})
        assert r.status_code == 200, (value[:20], r.text)
        assert r.json()["user_id"] == user.user_id
        r = api.loy("GET", "/loyalty/me", headers={"Authorization": value})
        assert r.status_code == 200, (value[:20], r.text)
        assert r.json()["uuid"] == user.user_id


# ---------------------------------------------------------------- ledger conflicts

def test_withdrawal_above_balance(api: Api) -> None:
    user = api.user()
    for path, body in (("/loyalty/me/withdrawals", {"amount": 101, "comment": "too much"}),
                       ("/loyalty", {"operation": "w", "comment": "too much", "balance": 101})):
        r = api.loy("POST", path, headers=user.auth, json=body)
        assert r.status_code == 409, r.text
        assert error_code(r) == "insufficient_points"
    assert api.balance(user) == 100
    assert len(history(api, user.auth)) == 1
    # Exactly the balance is fine and leaves 0.
    r = api.loy("POST", "/loyalty/me/withdrawals", headers=user.auth,
                json={"amount": 100, "comment": "everything"})
    assert r.status_code == 201, r.text
    assert r.json()["balance"] == 0
    r = api.loy("POST", "/loyalty/me/withdrawals", headers=user.auth,
                json={"amount": 1, "comment": "one more"})
    assert r.status_code == 409, r.text
    assert api.balance(user) == 0


def test_parallel_withdrawals_never_overdraw(api: Api) -> None:
    user = api.user()
    n = 8
    barrier = threading.Barrier(n)

    def attempt(_: int) -> httpx.Response:
        with httpx.Client(timeout=30.0, event_hooks={"response": [no_5xx]}) as client:
            barrier.wait(timeout=30)
            return client.post(f"{api.srv.loyalty}/loyalty/me/withdrawals",
                               headers=user.auth, json={"amount": 30, "comment": "race"})

    with ThreadPoolExecutor(max_workers=n) as pool:
        responses = list(pool.map(attempt, range(n)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 3 + [409] * (n - 3), [r.text for r in responses]
    assert api.balance(user) == 10
    items = history(api, user.auth)
    assert len(items) == 4
    assert sorted(tx["balance_after"] for tx in items) == [10, 40, 70, 100]


# ---------------------------------------------------------------- login and throttling

def test_login_failures_look_the_same(api: Api) -> None:
    user = api.register()
    wrong = api.sso("POST", "/auth/login", json={"email": user.email, "password": "wrong pass"})
    unknown = api.sso("POST", "/auth/login",
                      json={"email": unique_email("ghost"), "password": "wrong pass"})
    for r in (wrong, unknown):
        assert r.status_code == 401, r.text
        assert error_code(r) == "invalid_credentials"
    assert wrong.json() == unknown.json()


def test_login_is_throttled_per_email(api: Api) -> None:
    user = api.register()
    for _ in range(5):
        r = api.sso("POST", "/auth/login", json={"email": user.email, "password": "wrong!!!"})
        assert r.status_code == 401, r.text
        assert error_code(r) == "invalid_credentials"
    r = api.sso("POST", "/auth/login", json={"email": user.email, "password": "wrong!!!"})
    assert r.status_code == 429, r.text
    assert error_code(r) == "too_many_attempts"
    retry_after = int(r.headers["Retry-After"])
    assert 0 < retry_after <= 15 * 60
    # Now even the right password is refused, also when the email is spelled differently.
    for email in (user.email, user.email.upper()):
        r = api.sso("POST", "/auth/login", json={"email": email, "password": user.password})
        assert r.status_code == 429, r.text
        assert error_code(r) == "too_many_attempts"
        assert "Retry-After" in r.headers
    # Other accounts are not affected (the per-client limit is far away).
    other = api.register()
    assert api.login(other.email, other.password).user_id == other.user_id


def test_successful_login_resets_the_failure_count(api: Api) -> None:
    user = api.register()
    for _ in range(4):
        r = api.sso("POST", "/auth/login", json={"email": user.email, "password": "wrong!!!"})
        assert r.status_code == 401, r.text
    api.login(user.email, user.password)
    for _ in range(4):
        r = api.sso("POST", "/auth/login", json={"email": user.email, "password": "wrong!!!"})
        assert r.status_code == 401, r.text
    api.login(user.email, user.password)


# ---------------------------------------------------------------- idempotency

def test_idempotent_withdrawal(api: Api) -> None:
    user = api.user()
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    body = {"amount": 7, "comment": "once"}
    first = api.loy("POST", "/loyalty/me/withdrawals", headers={**user.auth, **key}, json=body)
    second = api.loy("POST", "/loyalty/me/withdrawals", headers={**user.auth, **key}, json=body)
    assert first.status_code == second.status_code == 201, (first.text, second.text)
    assert first.content == second.content
    assert api.balance(user) == 93
    assert len(history(api, user.auth)) == 2
    # Same key, different body: refused, nothing changes.
    r = api.loy("POST", "/loyalty/me/withdrawals", headers={**user.auth, **key},
                json={"amount": 8, "comment": "once"})
    assert r.status_code == 409, r.text
    assert error_code(r) == "idempotency_key_reused"
    assert api.balance(user) == 93
    # Without a key the same body is a new withdrawal.
    r = api.loy("POST", "/loyalty/me/withdrawals", headers=user.auth, json=body)
    assert r.status_code == 201, r.text
    assert api.balance(user) == 86


def test_idempotent_seed_deposit_and_keys_per_caller(api: Api, admin: dict[str, str]) -> None:
    user, other = api.user(), api.user()
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    body = {"uuid": user.user_id, "operation": "d", "comment": "gift", "balance": 40}
    first = api.loy("POST", "/loyalty", headers={**admin, **key}, json=body)
    second = api.loy("POST", "/loyalty", headers={**admin, **key}, json=body)
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.content == second.content
    assert first.json()["balance"] == 140
    assert api.balance(user) == 140
    # A different caller's use of the same key is independent.
    for account in (user, other):
        r = api.loy("POST", "/loyalty", headers={**account.auth, **key},
                    json={"operation": "w", "comment": "same key", "balance": 10})
        assert r.status_code == 200, r.text
    assert api.balance(user) == 130
    assert api.balance(other) == 90


def test_parallel_idempotent_requests_apply_once(api: Api) -> None:
    user = api.user()
    n = 6
    barrier = threading.Barrier(n)
    key = f"key-{uuid.uuid4()}"

    def attempt(_: int) -> httpx.Response:
        with httpx.Client(timeout=30.0, event_hooks={"response": [no_5xx]}) as client:
            barrier.wait(timeout=30)
            return client.post(f"{api.srv.loyalty}/loyalty/me/withdrawals",
                               headers={**user.auth, "Idempotency-Key": key},
                               json={"amount": 15, "comment": "twins"})

    with ThreadPoolExecutor(max_workers=n) as pool:
        responses = list(pool.map(attempt, range(n)))
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
    assert len({r.content for r in responses}) == 1
    assert api.balance(user) == 85


# ---------------------------------------------------------------- nothing ever 5xx

@pytest.fixture(scope="module")
def odd_user(server: Server) -> Account:
    """One user (with an open account) for the table of odd inputs."""
    with httpx.Client(timeout=10.0) as client:
        api = Api(server, client)
        return api.user()


def _odd_requests(token: str, uid: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    auth = bearer(token)
    json_ct = {"Content-Type": "application/json"}
    return [
        ("cursor superscript digit", "loy", "GET",
         {"url": "/loyalty/me/transactions", "params": {"cursor": "\u00b2"}, "headers": auth}),
        ("cursor beyond int64", "loy", "GET",
         {"url": "/loyalty/me/transactions", "params": {"cursor": "9999999999999999999"},
          "headers": auth}),
        ("cursor int64 max + 1", "loy", "GET",
         {"url": "/loyalty/me/transactions", "params": {"cursor": "9223372036854775808"},
          "headers": auth}),
        ("cursor arabic digits", "loy", "GET",
         {"url": "/loyalty/me/transactions", "params": {"cursor": "\u0661\u0662"},
          "headers": auth}),
        ("cursor negative", "loy", "GET",
         {"url": "/loyalty/me/transactions", "params": {"cursor": "-1"}, "headers": auth}),
        ("cursor 40 chars", "loy", "GET",
         {"url": "/loyalty/me/transactions", "params": {"cursor": "1" * 40}, "headers": auth}),
        ("limit 0", "loy", "GET",
         {"url": "/loyalty/me/transactions", "params": {"limit": "0"}, "headers": auth}),
        ("limit huge", "loy", "GET",
         {"url": "/loyalty/me/transactions", "params": {"limit": "9" * 30}, "headers": auth}),
        ("limit text", "loy", "GET",
         {"url": "/loyalty/me/transactions", "params": {"limit": "ten"}, "headers": auth}),
        ("admin history cursor beyond int64", "loy", "GET",
         {"url": f"/loyalty/admin/accounts/{uid}/transactions",
          "params": {"cursor": "9223372036854775808"}, "headers": auth}),
        ("uuid path not a uuid", "loy", "GET", {"url": "/loyalty/not-a-uuid", "headers": auth}),
        ("uuid path nil", "loy", "GET",
         {"url": "/loyalty/00000000-0000-0000-0000-000000000000", "headers": auth}),
        ("json array body", "sso", "POST", {"url": "/auth/login", "json": []}),
        ("json null body", "sso", "POST",
         {"url": "/auth/login", "content": b"null", "headers": json_ct}),
        ("json string body", "sso", "POST", {"url": "/auth/registration", "json": "hi"}),
        ("deeply nested json", "sso", "POST",
         {"url": "/auth/login", "content": b"[" * 30000, "headers": json_ct}),
        ("huge number", "loy", "POST",
         {"url": "/loyalty/me/withdrawals", "headers": {**auth, **json_ct},
          "content": b'{"amount": 1' + b"0" * 5000 + b', "comment": "x"}'}),
        ("NaN amount", "loy", "POST",
         {"url": "/loyalty/me/withdrawals", "headers": {**auth, **json_ct},
          "content": b'{"amount": NaN, "comment": "x"}'}),
        ("lone surrogate", "loy", "POST",
         {"url": "/loyalty/me/withdrawals", "headers": {**auth, **json_ct},
          "content": b'{"amount": 1, "comment": "\\ud800"}'}),
        ("form body", "sso", "POST",
         {"url": "/auth/login", "data": {"email": "a@example.com", "password": "x"}}),
        ("no body", "sso", "POST", {"url": "/auth/registration"}),
        ("email with NUL", "sso", "POST",
         {"url": "/auth/login", "json": {"email": "a\u0000@example.com", "password": "xxxxxxxx"}}),
        ("unicode email", "sso", "POST",
         {"url": "/auth/login", "json": {"email": "\u00e9@ex\u00e4mple.com",
                                         "password": "xxxxxxxx"}}),
        ("idempotency key too long", "loy", "POST",
         {"url": "/loyalty/me/withdrawals", "json": {"amount": 1, "comment": "x"},
          "headers": {**auth, "Idempotency-Key": "k" * 300}}),
        ("idempotency key with space", "loy", "POST",
         {"url": "/loyalty/me/withdrawals", "json": {"amount": 1, "comment": "x"},
          "headers": {**auth, "Idempotency-Key": "a b"}}),
        ("token header alg none", "loy", "GET",
         {"url": "/loyalty/me", "headers": bearer("eyJhbGciOiJub25lIn0.e30.")}),
        ("token header kid a list", "loy", "GET",
         {"url": "/loyalty/me",
          "headers": bearer("eyJhbGciOiJFZERTQSIsImtpZCI6WzFdfQ.e30.e30")}),
        ("token with non-ascii", "sso", "GET",
         {"url": "/auth/info",
          "headers": [("Authorization", "Bearer \u00e9\u00ff".encode("latin-1"))]}),
        ("refresh non-ascii token", "sso", "POST",
         {"url": "/auth/refresh", "json": {"token": "\u00e9" * 50}}),
        ("logout huge token", "sso", "POST",
         {"url": "/auth/logout", "json": {"token": "a" * 9000}}),
        ("logout token a number", "sso", "POST", {"url": "/auth/logout", "json": {"token": 5}}),
        ("percent-encoded NUL path", "loy", "GET", {"url": "/loyalty/%00", "headers": auth}),
    ]


ODD_NAMES = [case[0] for case in _odd_requests("token", "uid")]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_input_never_gives_5xx(api: Api, odd_user: Account, name: str) -> None:
    cases = {c[0]: c[1:] for c in _odd_requests(odd_user.access, odd_user.user_id)}
    service, method, kw = cases[name]
    base = api.srv.sso if service == "sso" else api.srv.loyalty
    kw = dict(kw)
    url = base + kw.pop("url")
    # A fresh connection: a 5xx also drops the keep-alive connection.
    with httpx.Client(timeout=10.0) as client:
        r = client.request(method, url, **kw)
    assert r.status_code < 500, f"{r.status_code} {r.text[:300]}"
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    if r.status_code >= 400:
        error_code(r)
    # The account is intact.
    assert api.balance(odd_user) == 100
