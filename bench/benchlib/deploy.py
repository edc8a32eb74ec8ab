"""Provision, seed and start: the state every benchmark (and the profiler) starts from."""

from __future__ import annotations

import time
from dataclasses import dataclass

from authloyalty.settings import Settings, load_settings
from benchlib import seed as seeding
from benchlib.brokerwarm import warm_brokers
from benchlib.stack import PASSWORD, Stack, log


@dataclass
class Deployment:
    stack: Stack
    seeded: seeding.Seeded
    settings: Settings
    provision_seconds: dict[str, float]
    broker_warmup_requests: int = 0


def deploy(*, users: int, refresh_sessions: int, logout_sessions: int,
           distinct_hashes: int, sso_processes: int = 1, loyalty_processes: int = 1,
           service_env: dict[str, str] | None = None, brokers: int = 1,
           broker_warmup: float = 0.0) -> Deployment:
    """PostgreSQL + Kafka + keys + migrations, seed the databases, start sso and loyalty.

    ``broker_warmup``: seconds of ``acks=all`` produce requests to warm the new brokers' JVMs
    (:mod:`benchlib.brokerwarm`) before anything else runs on them.

    On failure everything started so far is stopped again.
    """
    stack = Stack.create()
    stack.brokers = brokers
    stack.service_env = dict(service_env or {})
    timings: dict[str, float] = {}
    try:
        started = time.monotonic()
        stack.provision()
        timings["provision"] = round(time.monotonic() - started, 2)
        warmed = 0
        if broker_warmup > 0 and stack.kafka is not None:
            started = time.monotonic()
            warmed = warm_brokers(stack.kafka.bootstrap_servers, broker_warmup)
            timings["broker_warmup"] = round(time.monotonic() - started, 2)
            log(f"brokers warmed up: {warmed:,} acks=all produce requests in "
                f"{broker_warmup:g} s")
        settings = load_settings(stack.config_path)
        started = time.monotonic()
        log(f"seeding {users} users ({distinct_hashes} distinct Argon2id hashes at "
            f"m={settings.sso.argon2.memory_kib} KiB, t={settings.sso.argon2.time_cost}, "
            f"p={settings.sso.argon2.parallelism})")
        seeded = seeding.seed(
            sso_url=stack.sso_db_url, loyalty_url=stack.loyalty_db_url,
            keys_dir=stack.keys_dir, issuer=settings.sso.issuer,
            refresh_ttl=settings.sso.refresh_token_ttl_seconds, argon2=settings.sso.argon2,
            password=PASSWORD, token_dir=stack.root / "tokens", users=users,
            refresh_sessions=refresh_sessions, logout_sessions=logout_sessions,
            distinct_hashes=distinct_hashes)
        timings["seed"] = round(time.monotonic() - started, 2)
        timings.update({f"seed_{k}": v for k, v in seeded.seconds.items()})
        started = time.monotonic()
        stack.start_services(sso_processes, loyalty_processes)
        timings["start_services"] = round(time.monotonic() - started, 2)
    except BaseException:
        stack.stop()
        raise
    return Deployment(stack, seeded, settings, timings, warmed)
