"""Upgrading a database made before emails compared in Unicode NFC: rows are brought to the
new form, and accounts that would become one address are reported, never merged."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import sqlalchemy as sa

from authloyalty.bootstrap import sso_database
from authloyalty.platform.engines import create_engine
from authloyalty.platform.migrations import upgrade
from authloyalty.settings import Settings
from authloyalty.sso.tables import users
from tests.e2e.e2e_helpers import run_cli


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


async def test_migrate_renormalises_emails_and_reports_twins_without_merging(
        backend_settings: Settings, tmp_path: Path) -> None:
    target = sso_database(backend_settings)
    engine = create_engine(target)
    await upgrade("sso", engine, target, "sso_0001")  # the schema as it was
    twin_nfc, twin_nfd, lone = uuid4(), uuid4(), uuid4()
    now = datetime.now(UTC)
    rows = [(twin_nfc, "josé@example.com"), (twin_nfd, nfd("josé@example.com")),
            (lone, nfd("zoë@example.com"))]
    async with engine.begin() as conn:  # as the old code stored them: stripped, lower-cased
        await conn.execute(sa.insert(users), [
            {"id": i, "email": e, "email_normalized": e.lower(), "password_hash": "x",
             "is_admin": False, "created_at": now} for i, e in rows])
    await engine.dispose()

    args = (["--database-url", backend_settings.database_url] if backend_settings.database_url
            else ["--data-dir", str(backend_settings.data_dir)])
    result = run_cli("migrate", "--service", "sso", *args)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert str(twin_nfc) in warnings[0]
    assert str(twin_nfd) in warnings[0]
    assert "josé" not in result.stderr  # ids, not personal data

    engine = create_engine(target)
    try:
        async with engine.connect() as conn:
            stored: dict[UUID, str] = dict(
                (await conn.execute(sa.select(users.c.id, users.c.email_normalized))).all())
    finally:
        await engine.dispose()
    assert stored[lone] == "zoë@example.com"  # brought to NFC: it logs in as typed either way
    assert stored[twin_nfc] == "josé@example.com"  # both twins kept, unchanged
    assert stored[twin_nfd] == nfd("josé@example.com")
    # a second run reports the twins again until someone resolves them
    again = run_cli("migrate", "--service", "sso", *args)
    assert again.returncode == 0
    assert again.stderr.count("warning:") == 1
