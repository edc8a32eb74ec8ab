"""Keys stored before idempotent requests stored results (loyalty_0001 kept the rendered
answer) still replay byte for byte after the upgrade; new keys store the entry instead."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import httpx
import sqlalchemy as sa

from authloyalty.bootstrap import build_embedded, loyalty_app
from authloyalty.loyalty.service import Idempotency
from authloyalty.platform.migrations import upgrade
from authloyalty.settings import Settings
from authloyalty.sso.service import Registration

OLD_BODY = (b'{"status":"Success","balance":70,"transaction":{"id":41,"kind":"withdrawal",'
            b'"amount":30,"comment":"coffee","balance_after":70,'
            b'"created_at":"2030-05-01T12:00:00.123456Z"}}')


async def test_a_key_stored_before_the_upgrade_replays_its_answer(
        backend_settings: Settings) -> None:
    system = build_embedded(backend_settings)
    loyalty = system.loyalty
    await upgrade("sso", system.sso.engine, system.sso.target)
    await upgrade("loyalty", loyalty.engine, loyalty.target, "loyalty_0001")
    try:
        issued = await system.sso.service.register(Registration(f"{uuid4()}@example.com",
                                                                "long enough"))
        body = {"amount": 30, "comment": "coffee"}
        fingerprint = Idempotency.of("old", "me/withdrawal", issued.user_id, body).fingerprint
        async with loyalty.engine.begin() as conn:  # a row as the previous version wrote it
            await conn.execute(sa.text(
                "INSERT INTO idempotency_keys (caller_id, key, fingerprint, status_code,"
                " response_body, created_at) VALUES (:c, 'old', :f, 201, :b, :t)"),
                {"c": issued.user_id if conn.dialect.name == "postgresql"
                 else issued.user_id.hex, "f": fingerprint, "b": OLD_BODY,
                 "t": datetime.now(UTC)})
        await system.migrate()  # to head
        await system.sso.relay.run_once()
        auth = {"Authorization": f"Bearer {issued.tokens.access_token}"}
        transport = httpx.ASGITransport(app=loyalty_app(loyalty))
        async with httpx.AsyncClient(transport=transport, base_url="http://loyalty") as client:
            replay = await client.post("/loyalty/me/withdrawals", json=body,
                                       headers={**auth, "Idempotency-Key": "old"})
            fresh = await client.post("/loyalty/me/withdrawals", json=body,
                                      headers={**auth, "Idempotency-Key": "new"})
            again = await client.post("/loyalty/me/withdrawals", json=body,
                                      headers={**auth, "Idempotency-Key": "new"})
            balance = await client.get("/loyalty/me", headers=auth)
        assert (replay.status_code, replay.content) == (201, OLD_BODY)
        assert replay.headers["cache-control"] == "no-store"
        assert fresh.status_code == 201
        assert again.content == fresh.content
        assert again.headers["cache-control"] == "no-store"
        assert balance.json()["balance"] == 70  # the replayed key applied nothing
    finally:
        await system.stop()
