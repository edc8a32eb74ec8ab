"""Seed users, sessions, accounts and ledgers straight into the databases; mint their tokens.

Consistent data: every seeded user has an sso row with a real Argon2id hash of
:data:`~benchlib.stack.PASSWORD` (at the configured parameters), sessions whose refresh token id
matches the ``jti`` of the refresh token minted for it, and a loyalty account whose balance is the
sum of its two ledger entries (the 100-point welcome bonus and a deposit bringing it to
:data:`START_BALANCE`, so small withdrawals never run it dry).

User ids are ``b0000000-0000-4000-8000-<n as 12 hex digits>`` (n = 1..users): pgbench can build
the same ids from a random integer, so its scripts hit the same rows the services do.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from argon2 import PasswordHasher

from authloyalty.platform.tokens import KeyStore, TokenIssuer
from authloyalty.sso.settings import Argon2Settings

ID_PREFIX = "b0000000-0000-4000-8000-"
START_BALANCE = 1_000_000
WELCOME_BONUS = 100
# Tokens minted offline live this long (the services' own access TTL is 15 min; a full run is
# longer than that). Verification costs the same whatever the expiry.
ACCESS_TTL_SECONDS = 4 * 3600


def user_id(n: int) -> uuid.UUID:
    """The id of seeded user ``n`` (1-based)."""
    return uuid.UUID(f"{ID_PREFIX}{n:012x}")


def email(n: int) -> str:
    return f"user{n}@bench.example.com"


@dataclass
class Seeded:
    """What the load generators need, and where their files are."""

    users: int
    token_dir: Path
    argon2: Argon2Settings
    distinct_hashes: int
    logout_sessions: list[tuple[str, str]] = field(default_factory=list)  # (user id, access)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def users_file(self) -> Path:
        """``<user id> <access token>`` per line (one live session per user)."""
        return self.token_dir / "users.txt"

    @property
    def refresh_file(self) -> Path:
        """One refresh token per line (a session of its own per line)."""
        return self.token_dir / "refresh.txt"

    @property
    def logins_file(self) -> Path:
        """One email per line (password: stack.PASSWORD)."""
        return self.token_dir / "logins.txt"


def _hash_many(args: tuple[int, int, int, int, str]) -> list[str]:
    count, time_cost, memory_kib, parallelism, password = args
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
    return [hasher.hash(password) for _ in range(count)]


def argon2_hashes(count: int, params: Argon2Settings, password: str) -> list[str]:
    """``count`` distinct (salted) Argon2id hashes, computed on every core."""
    workers = max(1, multiprocessing.cpu_count())
    chunks = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
    jobs = [(c, params.time_cost, params.memory_kib, params.parallelism, password)
            for c in chunks if c]
    with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
        return [h for part in pool.map(_hash_many, jobs) for h in part]


def seed(*, sso_url: str, loyalty_url: str, keys_dir: Path, issuer: str, refresh_ttl: int,
         argon2: Argon2Settings, password: str, token_dir: Path, users: int,
         refresh_sessions: int, logout_sessions: int, distinct_hashes: int) -> Seeded:
    """Write everything; return the token files' description."""
    token_dir.mkdir(parents=True, exist_ok=True)
    result = Seeded(users=users, token_dir=token_dir, argon2=argon2,
                    distinct_hashes=distinct_hashes)
    started = time.monotonic()
    hashes = argon2_hashes(distinct_hashes, argon2, password)
    result.seconds["argon2_hashes"] = round(time.monotonic() - started, 2)

    now = datetime.now(UTC)
    issuer_ = TokenIssuer(KeyStore.load_dir(keys_dir), issuer, ACCESS_TTL_SECONDS, refresh_ttl)
    user_rows = []
    session_rows = []
    access_lines = []
    refresh_lines = []
    started = time.monotonic()
    for n in range(1, users + 1):
        uid = user_id(n)
        user_rows.append((uid, email(n), email(n), hashes[(n - 1) % len(hashes)],
                          f"Bench User {n}", None, False, now - timedelta(days=1)))
        sid, rid = uuid.uuid4(), uuid.uuid4()
        session_rows.append((sid, uid, now, rid))
        pair = issuer_.issue_pair(uid, sid, False, now, refresh_token_id=rid)
        access_lines.append(f"{uid} {pair.access_token}\n")
    for i in range(refresh_sessions):
        uid = user_id(i % users + 1)
        sid, rid = uuid.uuid4(), uuid.uuid4()
        session_rows.append((sid, uid, now, rid))
        pair = issuer_.issue_pair(uid, sid, False, now, refresh_token_id=rid)
        refresh_lines.append(f"{pair.refresh_token}\n")
    for i in range(logout_sessions):
        uid = user_id(users - i % users)  # from the other end: other users than refresh's
        sid, rid = uuid.uuid4(), uuid.uuid4()
        session_rows.append((sid, uid, now, rid))
        pair = issuer_.issue_pair(uid, sid, False, now, refresh_token_id=rid)
        result.logout_sessions.append((str(uid), pair.access_token))
    result.seconds["mint_tokens"] = round(time.monotonic() - started, 2)

    result.users_file.write_text("".join(access_lines))
    result.refresh_file.write_text("".join(refresh_lines))
    result.logins_file.write_text("".join(f"{email(n)}\n" for n in range(1, users + 1)))

    account_rows = [(user_id(n), START_BALANCE, now - timedelta(days=1), now)
                    for n in range(1, users + 1)]
    ledger_rows = []
    for n in range(1, users + 1):
        uid = user_id(n)
        ledger_rows.append((uid, "deposit", WELCOME_BONUS, "registration", WELCOME_BONUS,
                            now - timedelta(days=1)))
        ledger_rows.append((uid, "deposit", START_BALANCE - WELCOME_BONUS, "bench seed",
                            START_BALANCE, now - timedelta(hours=1)))

    started = time.monotonic()
    asyncio.run(_copy(sso_url, loyalty_url, user_rows, session_rows, account_rows, ledger_rows))
    result.seconds["copy"] = round(time.monotonic() - started, 2)
    return result


Rows = Sequence[tuple[Any, ...]]


async def _copy(sso_url: str, loyalty_url: str, user_rows: Rows, session_rows: Rows,
                account_rows: Rows, ledger_rows: Rows) -> None:
    sso = await asyncpg.connect(sso_url)
    try:
        async with sso.transaction():
            await sso.copy_records_to_table(
                "users", records=user_rows,
                columns=["id", "email", "email_normalized", "password_hash", "name", "birthday",
                         "is_admin", "created_at"])
            await sso.copy_records_to_table(
                "sessions", records=session_rows,
                columns=["id", "user_id", "created_at", "refresh_token_id"])
        await sso.execute("VACUUM ANALYZE")
    finally:
        await sso.close()
    loyalty = await asyncpg.connect(loyalty_url)
    try:
        async with loyalty.transaction():
            await loyalty.copy_records_to_table(
                "accounts", records=account_rows,
                columns=["user_id", "balance", "created_at", "updated_at"])
            await loyalty.copy_records_to_table(
                "ledger_entries", records=ledger_rows,
                columns=["account_id", "kind", "amount", "comment", "balance_after",
                         "created_at"])
        await loyalty.execute("VACUUM ANALYZE")
    finally:
        await loyalty.close()


def ledger_consistent(loyalty_url: str) -> dict[str, int]:
    """Accounts whose balance is not the sum of their ledger (must be 0), and totals."""

    async def check() -> dict[str, int]:
        conn = await asyncpg.connect(loyalty_url)
        try:
            row = await conn.fetchrow("""
                WITH sums AS (
                    SELECT account_id,
                           sum(CASE WHEN kind = 'deposit' THEN amount ELSE -amount END) AS total,
                           count(*) AS entries
                    FROM ledger_entries GROUP BY account_id)
                SELECT count(*) FILTER (WHERE s.total IS DISTINCT FROM a.balance) AS mismatched,
                       count(*) AS accounts,
                       coalesce(sum(s.entries), 0) AS entries,
                       count(*) FILTER (WHERE a.balance < 0) AS negative
                FROM accounts a LEFT JOIN sums s ON s.account_id = a.user_id""")
            return {k: int(v) for k, v in row.items()}
        finally:
            await conn.close()

    return asyncio.run(check())
