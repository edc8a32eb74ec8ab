"""The embedded system on each real backend, migrated and started without HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from authloyalty.bootstrap import EmbeddedSystem, build_embedded
from authloyalty.platform.settings import Settings


@pytest.fixture
async def system(backend_settings: Settings) -> AsyncIterator[EmbeddedSystem]:
    """sso + loyalty with migrations applied; the relay is driven by the test."""
    built = build_embedded(backend_settings)
    await built.migrate()
    try:
        yield built
    finally:
        await built.stop()
