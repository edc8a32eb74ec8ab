"""Fixtures of sso's use-case tests: a fake store and the service over it (a module may define
its own ``store`` and ``service`` instead, as the ledger's tests do)."""

from __future__ import annotations

import pytest

from authloyalty.sso.service import AuthService
from tests.fakes import FakeSsoStore
from tests.unit.test_auth_service import Clock, make_service


@pytest.fixture
def store() -> FakeSsoStore:
    return FakeSsoStore()


@pytest.fixture
def service(store: FakeSsoStore) -> AuthService:
    return make_service(store, Clock())
