"""Event scenarios, driven from Python (asyncio + httpx): they measure a delay across services.

registration → bonus visible
    ``POST /auth/registration`` (201, tokens) then ``GET /loyalty/me`` with the new access token
    every ``poll_interval`` seconds until it answers 200 (404 before the welcome event is
    processed). Delay = receipt of the 201 → receipt of the first 200. The path: sso's commit
    (user + outbox row) → relay → Kafka ``registration`` → loyalty consumer → account + bonus.

logout → refused at loyalty
    ``POST /auth/logout`` with a seeded session's access token (200), then ``GET /loyalty/me``
    with that token until it answers 401. Delay = receipt of the logout's 200 → receipt of the
    first 401. The path: sso's commit (session revoked + outbox row) → relay → Kafka
    ``sessions`` → loyalty's in-memory revocation set.

logout → refused at loyalty under a broker kill
    The same, for a batch of logouts started right after one of three Kafka brokers is
    SIGKILLed (it is restarted after the batch); the worst case per loyalty replica is the
    figure.

Resolution: a delay is overstated by at most one poll interval plus one request's round trip.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchlib.stats import summarize


@dataclass
class DriverResult:
    """Raw samples (seconds) and errors of a driver run."""

    elapsed: float = 0.0
    operations: int = 0
    request_latency: list[float] = field(default_factory=list)
    delay: list[float] = field(default_factory=list)
    polls: int = 0
    errors: list[str] = field(default_factory=list)
    # Delay per loyalty replica (logout: each replica's own 200 → 401).
    per_target: dict[str, list[float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "elapsed_s": round(self.elapsed, 3),
            "operations": self.operations,
            "throughput_rps": round(self.operations / self.elapsed, 2) if self.elapsed else 0.0,
            "request_latency_ms": summarize(self.request_latency),
            "delay_ms": summarize(self.delay),
            "polls": self.polls,
            "delay_samples_ms": [round(d * 1000, 1) for d in self.delay],
            "errors": len(self.errors),
            "error_samples": self.errors[:10],
            "per_target_ms": {target: summarize(values)
                              for target, values in self.per_target.items()},
        }


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(30.0),
                             limits=httpx.Limits(max_connections=64,
                                                 max_keepalive_connections=64))


async def _poll_until(client: httpx.AsyncClient, url: str, token: str, want: int,
                      pending: int, start: float, give_up_after: float, poll_interval: float,
                      result: DriverResult) -> float | None:
    """GET ``url`` until it answers ``want``; any status other than ``pending`` is an error."""
    headers = {"Authorization": f"Bearer {token}"}
    while True:
        response = await client.get(url, headers=headers)
        now = time.perf_counter()
        result.polls += 1
        if response.status_code == want:
            return now - start
        if response.status_code != pending:
            result.errors.append(f"GET {url}: {response.status_code} {response.text[:120]}")
            return None
        if now - start > give_up_after:
            result.errors.append(f"GET {url}: still {pending} after {give_up_after} s")
            return None
        await asyncio.sleep(poll_interval)


async def registration_to_bonus(sso: Sequence[str], loyalty: Sequence[str], *, duration: float,
                                concurrency: int,
                                poll_interval: float, password: str, tag: str,
                                expected_bonus: int, give_up_after: float = 30.0) -> DriverResult:
    """Register users for ``duration`` seconds from ``concurrency`` workers.

    With several processes per service, registrations and polls go round-robin over them.
    """
    result = DriverResult()
    counter = 0

    async def worker(client: httpx.AsyncClient, stop_at: float) -> None:
        nonlocal counter
        while time.perf_counter() < stop_at:
            counter += 1
            n = counter
            email = f"reg-{tag}-{n}@bench.example.com"
            sent = time.perf_counter()
            response = await client.post(f"{sso[n % len(sso)]}/auth/registration",
                                         json={"email": email, "password": password,
                                               "name": "Bench Registration"})
            received = time.perf_counter()
            result.request_latency.append(received - sent)
            if response.status_code != 201:
                result.errors.append(f"registration: {response.status_code} "
                                     f"{response.text[:120]}")
                continue
            token = response.json()["access_token"]
            me = f"{loyalty[n % len(loyalty)]}/loyalty/me"
            delay = await _poll_until(client, me, token, 200, 404,
                                      received, give_up_after, poll_interval, result)
            result.operations += 1
            if delay is not None:
                result.delay.append(delay)
                # The bonus itself must be right, not just the account's existence.
                check = await client.get(me,
                                         headers={"Authorization": f"Bearer {token}"})
                balance = check.json().get("balance")
                if balance != expected_bonus:
                    result.errors.append(f"bonus: balance {balance}, want {expected_bonus}")

    async with _client() as client:
        started = time.perf_counter()
        stop_at = started + duration
        await asyncio.gather(*(worker(client, stop_at) for _ in range(concurrency)))
        result.elapsed = time.perf_counter() - started
    return result


async def logout_to_refusal(sso: Sequence[str], loyalty: Sequence[str],
                            sessions: Sequence[tuple[str, str]], *, concurrency: int,
                            poll_interval: float, give_up_after: float = 10.0) -> DriverResult:
    """Log out every session in ``sessions`` ((user id, access token)), ``concurrency`` at once.

    With several loyalty processes, each must refuse the token: every one is polled until it
    answers 401, and the delay is the last one's.
    """
    result = DriverResult()
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for item in sessions:
        queue.put_nowait(item)

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            try:
                _uid, token = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            n = len(sessions) - queue.qsize()
            sent = time.perf_counter()
            response = await client.post(f"{sso[n % len(sso)]}/auth/logout",
                                         json={"token": token})
            received = time.perf_counter()
            result.request_latency.append(received - sent)
            if response.status_code != 200:
                result.errors.append(f"logout: {response.status_code} {response.text[:120]}")
                continue
            delays = await asyncio.gather(*(
                _poll_until(client, f"{base}/loyalty/me", token, 401, 200, received, give_up_after,
                            poll_interval, result) for base in loyalty))
            result.operations += 1
            for base, d in zip(loyalty, delays, strict=True):
                if d is not None:
                    result.per_target.setdefault(base, []).append(d)
            if all(d is not None for d in delays):
                result.delay.append(max(d for d in delays if d is not None))

    async with _client() as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        result.elapsed = time.perf_counter() - started
    return result


async def logout_to_refusal_under_broker_kill(
        sso: Sequence[str], loyalty: Sequence[str], sessions: Sequence[tuple[str, str]], *,
        kill: Callable[[], None], restore: Callable[[], None], concurrency: int,
        poll_interval: float, give_up_after: float = 30.0) -> DriverResult:
    """:func:`logout_to_refusal` for a batch of sessions started right after ``kill()`` (a
    Kafka broker SIGKILLed); ``restore()`` (the broker restarted) once the batch is done. The
    first logouts of the batch meet the dead broker still in the in-sync replicas."""
    await asyncio.to_thread(kill)
    try:
        return await logout_to_refusal(sso, loyalty, sessions, concurrency=concurrency,
                                       poll_interval=poll_interval, give_up_after=give_up_after)
    finally:
        await asyncio.to_thread(restore)
