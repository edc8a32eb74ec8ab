"""Composition root: builds each service's object graph from settings.

Tests call the same functions with their own settings (and fakes where they test use cases).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from authloyalty import __version__
from authloyalty.loyalty import http as loyalty_http
from authloyalty.loyalty.consumer import LoyaltyEventHandlers
from authloyalty.loyalty.revocations import Authenticator, RevokedSessions
from authloyalty.loyalty.service import LedgerService
from authloyalty.loyalty.uow import SqlLoyaltyUnitOfWork
from authloyalty.platform.db import DatabaseTarget, create_engine, resolve_target
from authloyalty.platform.events import (
    SESSION_REVOKED,
    USER_REGISTERED,
    EventPublisher,
    InProcessBus,
)
from authloyalty.platform.http import create_app
from authloyalty.platform.migrations import upgrade
from authloyalty.platform.outbox import OutboxRelay
from authloyalty.platform.settings import LoyaltySettings, Settings, SsoSettings
from authloyalty.platform.tokens import KeyProvider, KeyStore, TokenIssuer, TokenVerifier
from authloyalty.sso import http as sso_http
from authloyalty.sso import tables as sso_tables
from authloyalty.sso.passwords import PasswordHasher
from authloyalty.sso.service import AuthService
from authloyalty.sso.uow import SqlSsoUnitOfWork

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL_SECONDS = 300.0


def sso_database(settings: Settings) -> DatabaseTarget:
    """sso's database: its own URL, the ``sso`` schema of the shared URL, or ``sso.db``."""
    db = settings.sso.database
    return resolve_target("sso", db.url, settings.database_url, settings.data_dir,
                          schema=db.schema_name, pool_size=db.pool_size, echo=db.echo)


def loyalty_database(settings: Settings) -> DatabaseTarget:
    """loyalty's database, resolved like sso's."""
    db = settings.loyalty.database
    return resolve_target("loyalty", db.url, settings.database_url, settings.data_dir,
                          schema=db.schema_name, pool_size=db.pool_size, echo=db.echo)


def load_keys(settings: Settings) -> KeyStore:
    """sso's signing keys; the embedded mode generates the first one into the data dir."""
    configured = settings.sso.signing_keys_dir
    if configured is not None:
        return KeyStore.load_dir(configured)
    return KeyStore.load_or_create(Path(settings.data_dir) / "keys",
                                   settings.sso.signing_algorithm)


@dataclass
class SsoContainer:
    """Everything the sso process needs."""

    settings: SsoSettings
    target: DatabaseTarget
    engine: AsyncEngine
    keys: KeyStore
    service: AuthService
    relay: OutboxRelay


@dataclass
class LoyaltyContainer:
    """Everything the loyalty process needs."""

    settings: LoyaltySettings
    target: DatabaseTarget
    engine: AsyncEngine
    revoked: RevokedSessions
    authenticator: Authenticator
    service: LedgerService
    handlers: LoyaltyEventHandlers


def build_sso(settings: Settings, publisher: EventPublisher, keys: KeyStore) -> SsoContainer:
    """Wire sso: database, hashing, tokens, use cases and its outbox relay."""
    target = sso_database(settings)
    engine = create_engine(target)
    cfg = settings.sso
    relay = OutboxRelay(engine, sso_tables.outbox, publisher,
                        batch_size=settings.events.relay_batch_size,
                        poll_interval=settings.events.relay_poll_interval_seconds,
                        max_backoff=settings.events.relay_max_backoff_seconds)
    issuer = TokenIssuer(keys, cfg.issuer, cfg.access_token_ttl_seconds,
                         cfg.refresh_token_ttl_seconds)
    verifier = TokenVerifier(keys, cfg.issuer)
    service = AuthService(lambda: SqlSsoUnitOfWork(engine, relay.notify),
                          PasswordHasher(cfg.argon2), issuer, verifier, cfg)
    return SsoContainer(cfg, target, engine, keys, service, relay)


def build_loyalty(settings: Settings, keys: KeyProvider) -> LoyaltyContainer:
    """Wire loyalty: database, local token verification with revocations, use cases."""
    target = loyalty_database(settings)
    engine = create_engine(target)
    cfg = settings.loyalty

    def uow() -> SqlLoyaltyUnitOfWork:
        return SqlLoyaltyUnitOfWork(engine)

    revoked = RevokedSessions()
    authenticator = Authenticator(TokenVerifier(keys, settings.token_issuer), revoked)
    service = LedgerService(uow, idempotency_ttl_hours=cfg.idempotency_ttl_hours)
    handlers = LoyaltyEventHandlers(uow, revoked, cfg.welcome_bonus)
    return LoyaltyContainer(cfg, target, engine, revoked, authenticator, service, handlers)


def sso_app(container: SsoContainer) -> FastAPI:
    """The sso HTTP application."""
    app = create_app("authloyalty sso", "Users, sessions and tokens.", "sso", __version__)
    app.state.container = container
    sso_http.install(app)
    return app


def loyalty_app(container: LoyaltyContainer) -> FastAPI:
    """The loyalty HTTP application."""
    app = create_app("authloyalty loyalty", "Points ledger. Press Authorize and paste an "
                     "access token from sso's /auth/login or /auth/registration.",
                     "loyalty", __version__)
    app.state.container = container
    loyalty_http.install(app)
    return app


async def _every(interval: float, job: Callable[[], Awaitable[object]], name: str) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await job()
        except Exception:
            log.exception("maintenance job %s failed", name)


@dataclass
class EmbeddedSystem:
    """Both services in one process, joined by the in-process bus."""

    settings: Settings
    sso: SsoContainer
    loyalty: LoyaltyContainer
    bus: InProcessBus
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def migrate(self) -> None:
        """Apply both services' migrations."""
        await upgrade("sso", self.sso.engine, self.sso.target)
        await upgrade("loyalty", self.loyalty.engine, self.loyalty.target)

    async def start(self) -> None:
        """Migrate, restore state, create the bootstrap admin, start background work."""
        await self.migrate()
        await self.loyalty.handlers.load_revocations()
        admin = self.settings.admin
        if admin.email and admin.password:
            _user_id, created = await self.sso.service.ensure_admin(admin.email, admin.password)
            log.info("admin %s %s", admin.email, "created" if created else "promoted")
        self.tasks = [
            asyncio.create_task(self.sso.relay.run_forever(), name="outbox-relay"),
            asyncio.create_task(_every(MAINTENANCE_INTERVAL_SECONDS,
                                       self._maintenance, "maintenance")),
        ]

    async def _maintenance(self) -> None:
        await self.sso.service.purge_login_failures()
        await self.loyalty.service.purge_idempotency_keys()
        await self.loyalty.handlers.purge_revocations()

    async def stop(self) -> None:
        """Stop background work (after a last relay pass) and close the databases."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.sso.relay.run_once()
        await self.sso.engine.dispose()
        await self.loyalty.engine.dispose()


def build_embedded(settings: Settings) -> EmbeddedSystem:
    """sso and loyalty in one process, sharing keys in memory and an in-process bus."""
    bus = InProcessBus()
    keys = load_keys(settings)
    sso = build_sso(settings, bus, keys)
    loyalty = build_loyalty(settings, keys)
    bus.subscribe(USER_REGISTERED, loyalty.handlers.user_registered)
    bus.subscribe(SESSION_REVOKED, loyalty.handlers.session_revoked)
    return EmbeddedSystem(settings, sso, loyalty, bus)
