"""What a signature costs: the project's own token issuer and verifier, per algorithm.

loyalty verifies an access token's signature the first time a process sees it and remembers
it until it expires (the authenticated scenarios run after every process has seen every
seeded token, see ``Runner.prime_tokens``); sso signs two tokens per login and refresh. This
measures both for each algorithm sso can use, in this process, one core.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from authloyalty.platform.tokens import (
    KeyStore,
    SigningKey,
    TokenIssuer,
    TokenVerifier,
    generate_private_key,
)

ALGORITHMS = ("EdDSA", "ES256", "RS256")


def _per_call_us(call: Any, seconds: float) -> tuple[float, int]:
    count, started = 0, time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(20):
            call()
        count += 20
    return (time.perf_counter() - started) / count * 1e6, count


def measure(seconds: float = 1.0) -> list[dict[str, Any]]:
    """[{"algorithm", "sign_pair_us", "verify_us", "verifies_per_s", "token_bytes"}]."""
    return [_one(algorithm, seconds) for algorithm in ALGORITHMS]


def _one(algorithm: str, seconds: float) -> dict[str, Any]:
    keys = KeyStore([SigningKey.from_private(generate_private_key(algorithm))])
    issuer = TokenIssuer(keys, "bench", 900, 86_400)
    verifier = TokenVerifier(keys, "bench")
    now = datetime.now(UTC)
    pair = issuer.issue_pair(uuid4(), uuid4(), False, now)
    sign_us, _ = _per_call_us(lambda: issuer.issue_pair(uuid4(), uuid4(), False, now),
                              seconds / 2)
    verify_us, _ = _per_call_us(lambda: verifier.verify(pair.access_token, "access"), seconds)
    return {"algorithm": algorithm, "sign_pair_us": round(sign_us, 1),
            "verify_us": round(verify_us, 1), "verifies_per_s": round(1e6 / verify_us),
            "token_bytes": len(pair.access_token)}
