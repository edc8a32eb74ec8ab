"""CPU per request of loyalty's hot routes at the HTTP edge, in process, without a database.

    python bench/edge_cost.py [--src SRC] [--standard] [--requests 5000] [--runs 7]

Builds loyalty's app from the source tree ``SRC`` (default: this checkout's ``src``) with its
use cases and token check stubbed (a withdrawal answers at once, every token is a known
caller), then calls it directly as an ASGI app: middlewares, routing, resolution, validation,
the endpoint and rendering, nothing else; the original's routes (``GET /loyalty/{uuid}``,
``POST /loyalty``) beside the two they equal. ``--standard`` sends every request through FastAPI's
own resolution (``platform.http.fast.standard_resolution``) to price the fast routes. Reports
the median and the minimum over the runs, in µs of process CPU per request: steadier than
``bench/ab.py`` (no database, no batching) for changes of a few µs at the edge.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

BODY = b'{"amount":30,"comment":"coffee"}'
SEED_BODY = b'{"operation":"w","balance":30,"comment":"coffee"}'
SRC = Path(__file__).resolve().parent.parent / "src"


def _scope(method: str, path: str, body: bytes) -> dict[str, Any]:
    headers = [(b"host", b"loyalty"), (b"authorization", b"Bearer token")]
    if body:
        headers += [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 1), "server": ("loyalty", 80)}


def build(standard: bool) -> tuple[Any, Any]:
    """loyalty's app over stubs, from whichever tree is first on ``sys.path``, and the id of
    the caller every token stands for."""
    from authloyalty.loyalty import http as loyalty_http
    from authloyalty.loyalty.domain import Account, LedgerEntry, Principal
    from authloyalty.platform.http import create_app

    user = Principal(user_id=uuid4(), session_id=uuid4(), is_admin=False)
    now = datetime.now(UTC)

    class Authenticator:
        def known_principal(self, token: str) -> Principal:
            return user

    class Service:
        async def balance(self, actor: Principal, account_id: Any) -> Account:
            return Account(user_id=account_id, balance=1000, created_at=now)

        async def expiring(self, account: Account, limit: int = 5) -> list[Any]:
            return []  # an account without expiring points: no read

        async def operate(self, op: Any, *args: Any) -> Any:
            entry = LedgerEntry(id=7, account_id=op.account_id, kind=op.kind, amount=op.amount,
                                comment=op.comment, balance_after=970, created_at=now)
            if args and callable(args[0]):  # trees before the ledger redesign render here
                return args[0](entry)
            return entry

    app = create_app("loyalty", "", "loyalty", "0")
    app.state.container = SimpleNamespace(authenticator=Authenticator(), service=Service())
    loyalty_http.install(app)
    if standard:
        from authloyalty.platform.http.fast import standard_resolution
        return standard_resolution(app), user.user_id
    return app, user.user_id


async def _request(app: Any, method: str, path: str, body: bytes) -> int:
    status = 0
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await asyncio.Event().wait()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(method, path, body), receive, send)
    return status


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", default=str(SRC))
    parser.add_argument("--standard", action="store_true")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    sys.path.insert(0, args.src)
    app, user_id = build(args.standard)
    for name, method, path, body, expected in (
            ("bare", "GET", "/loyalty/healthz", b"", 200),
            ("balance", "GET", "/loyalty/me", b"", 200),
            ("withdrawal", "POST", "/loyalty/me/withdrawals", BODY, 201),
            # The original's routes: the same use cases as the two above.
            ("balance (original)", "GET", f"/loyalty/{user_id}", b"", 200),
            ("withdrawal (original)", "POST", "/loyalty", SEED_BODY, 200)):
        assert await _request(app, method, path, body) == expected
        runs = []
        for _ in range(args.runs):
            started = time.process_time()
            for _ in range(args.requests):
                await _request(app, method, path, body)
            runs.append((time.process_time() - started) / args.requests * 1e6)
        print(f"{name:<22} median {statistics.median(runs):5.1f} µs  min {min(runs):5.1f} µs",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
