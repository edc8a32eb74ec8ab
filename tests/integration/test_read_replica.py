"""Balance and history reads come from the replica; writes and idempotency never do."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from authloyalty.bootstrap import build_embedded
from authloyalty.loyalty.domain import LedgerEntry, Principal
from authloyalty.loyalty.service import Idempotency, Operation
from authloyalty.sso.service import Registration
from devstack.postgres import PostgresCluster, scratch_dir
from tests.conftest import FAST_ARGON2, settings_for


@pytest.fixture
def replica(pg_cluster: PostgresCluster) -> Iterator[PostgresCluster]:
    """A streaming replica that applies changes 2 s late, so stale reads are visible."""
    base = scratch_dir("authloyalty-test-replica-")
    standby = pg_cluster.start_replica(base)
    standby.psql("ALTER SYSTEM SET recovery_min_apply_delay = '2s'")
    standby.psql("SELECT pg_reload_conf()")
    try:
        yield standby
    finally:
        standby.stop()
        shutil.rmtree(base, ignore_errors=True)



async def test_reads_lag_on_the_replica_while_writes_see_the_primary(
        tmp_path: Path, pg_cluster: PostgresCluster, replica: PostgresCluster) -> None:
    name = f"t_{uuid4().hex[:12]}"
    url = pg_cluster.create_database(name)
    await asyncio.sleep(0.1)
    settings = settings_for(tmp_path, url, sso={"argon2": FAST_ARGON2.model_dump()},
                            loyalty={"database": {"read_url": replica.url(name, driver=None)}})
    system = build_embedded(settings)
    try:
        await system.migrate()
        issued = await system.sso.service.register(Registration("r@example.com", "long enough"))
        await system.sso.relay.run_once()
        owner = Principal(issued.user_id, uuid4(), False)

        async def replica_balance() -> int | None:
            try:
                return (await system.loyalty.service.balance(owner, owner.user_id)).balance
            except Exception:
                return None

        for _ in range(100):  # wait until the replica has the account
            if await replica_balance() == 100:
                break
            await asyncio.sleep(0.1)
        assert await replica_balance() == 100
        op = Operation(owner, owner.user_id, "withdrawal", 30, "coffee")
        key = Idempotency.of("k", "w", owner.user_id, {"amount": 30})
        first = await system.loyalty.service.operate(op, key)
        assert isinstance(first, LedgerEntry)
        assert first.balance_after == 70
        # The write path answered from the primary; the read path still shows the old value.
        assert await replica_balance() == 100
        # A replay right away is recognised: idempotency keys are read from the primary.
        again = await system.loyalty.service.operate(op, key)
        assert again == first
        for _ in range(60):
            if await replica_balance() == 70:
                break
            await asyncio.sleep(0.1)
        assert await replica_balance() == 70
    finally:
        await system.stop()
        pg_cluster.drop_database(name)
