"""Composition root: builds each service's object graph from settings.

Tests call the same functions with their own settings (and fakes where they test use cases).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from uuid import UUID

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from authloyalty import __version__
from authloyalty.events import UserDeleted, UserRegistered, UserRestored
from authloyalty.loyalty import http as loyalty_http
from authloyalty.loyalty.consumer import LoyaltyEventHandlers
from authloyalty.loyalty.domain import AccountReads, Movements, Owner, OwnerDirectory
from authloyalty.loyalty.events import LOYALTY_EVENTS
from authloyalty.loyalty.hold_service import HoldService
from authloyalty.loyalty.movements import (
    CoalescedAccountReads,
    CoalescedMovements,
    UnitOfWorkAccountReads,
    UnitOfWorkMovements,
)
from authloyalty.loyalty.owners import GrpcOwnerDirectory
from authloyalty.loyalty.revocations import (
    Authenticator,
    RevocationsCatchingUp,
    RevokedSessions,
)
from authloyalty.loyalty.service import LedgerService
from authloyalty.loyalty.settings import LoyaltySettings
from authloyalty.loyalty.uow import SqlLoyaltyUnitOfWork
from authloyalty.platform import telemetry
from authloyalty.platform.bus import EventPublisher, InProcessBus
from authloyalty.platform.database import Database, open_database
from authloyalty.platform.engines import DatabaseTarget, create_engine, resolve_target
from authloyalty.platform.files import private_dir
from authloyalty.platform.http import create_app
from authloyalty.platform.jwks import JwksKeyProvider
from authloyalty.platform.kafka import (
    KafkaEventConsumer,
    KafkaPublisher,
    ensure_topics,
    schema_registry,
)
from authloyalty.platform.kafka_codec import EventDecoder, EventEncoder
from authloyalty.platform.kafka_reader import KafkaTopicReader
from authloyalty.platform.loop_lag import LOOP_LAG_INTERVAL_SECONDS, watch_loop_lag
from authloyalty.platform.migrations import ensure_current, upgrade
from authloyalty.platform.outbox import OutboxRelay
from authloyalty.platform.settings import ConfigError
from authloyalty.platform.tokens import KeyProvider, KeyStore, TokenIssuer, TokenVerifier
from authloyalty.settings import Settings
from authloyalty.sso import http as sso_http
from authloyalty.sso import tables as sso_tables
from authloyalty.sso.domain import UserNotFound
from authloyalty.sso.events import SSO_EVENTS
from authloyalty.sso.passwords import PasswordHasher
from authloyalty.sso.service import AuthService
from authloyalty.sso.settings import SsoSettings
from authloyalty.sso.uow import SqlSsoUnitOfWork

log = logging.getLogger(__name__)


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


def sso_read_database(settings: Settings) -> DatabaseTarget | None:
    """sso's read replica, when configured (user profile reads go there: see
    docs/architecture.md, "Reads: leader or replica")."""
    db = settings.sso.database
    if not db.read_url:
        return None
    primary = sso_database(settings)
    return resolve_target("sso", db.read_url, None, settings.data_dir,
                          schema=primary.schema, pool_size=db.pool_size, echo=db.echo,
                          replica=True)


def loyalty_read_database(settings: Settings) -> DatabaseTarget | None:
    """loyalty's read replica, when configured (balance and history reads go there)."""
    db = settings.loyalty.database
    if not db.read_url:
        return None
    primary = loyalty_database(settings)
    return resolve_target("loyalty", db.read_url, None, settings.data_dir,
                          schema=primary.schema, pool_size=db.pool_size, echo=db.echo,
                          replica=True)


def load_keys(settings: Settings) -> KeyStore:
    """sso's signing keys; the embedded mode generates the first one into the data dir."""
    configured = settings.sso.signing_keys_dir
    if configured is not None:
        return KeyStore.load_dir(configured)
    if settings.mode == "production":
        raise ConfigError(
            "production mode needs sso.signing_keys_dir (create a key with "
            "`authloyalty keys generate --dir DIR`); no key is ever built in")
    data_dir = private_dir(Path(settings.data_dir))  # before the keys dir creates it 0755
    return KeyStore.load_or_create(data_dir / "keys", settings.sso.signing_algorithm)


@dataclass
class SsoContainer:
    """Everything the sso process needs."""

    settings: SsoSettings
    target: DatabaseTarget
    engine: AsyncEngine  # migrations
    database: Database  # everything else
    keys: KeyStore
    service: AuthService
    relay: OutboxRelay
    read_database: Database | None = None
    passwords: PasswordHasher | None = None

    async def dispose(self) -> None:
        """Close the database pools and the password hashing threads."""
        if self.passwords is not None:
            self.passwords.close()
        await self.database.dispose()
        await self.engine.dispose()
        if self.read_database is not None:
            await self.read_database.dispose()


@dataclass
class LoyaltyContainer:
    """Everything the loyalty process needs."""

    settings: LoyaltySettings
    target: DatabaseTarget
    engine: AsyncEngine  # migrations
    database: Database  # everything else
    revoked: RevokedSessions
    authenticator: Authenticator
    service: LedgerService
    handlers: LoyaltyEventHandlers
    holds: HoldService
    read_database: Database | None = None
    coalescers: list[CoalescedAccountReads | CoalescedMovements] = field(default_factory=list)

    def not_ready(self) -> RevocationsCatchingUp | None:
        """Why this replica must not serve yet (``/loyalty/ready``), or None."""
        return None if self.revoked.complete else RevocationsCatchingUp()

    async def dispose(self) -> None:
        """Let batches under way finish, then close the database pools."""
        for coalescer in self.coalescers:
            await coalescer.aclose()
        await self.database.dispose()
        await self.engine.dispose()
        if self.read_database is not None:
            await self.read_database.dispose()


def open_databases(target: DatabaseTarget) -> tuple[AsyncEngine, Database]:
    """The engine migrations run on, and the database the service runs on (asyncpg's own pool
    on PostgreSQL, the same engine on SQLite)."""
    engine = create_engine(target)
    database = open_database(target, engine)
    telemetry.instrument_database(database)
    return engine, database


def build_sso(settings: Settings, publisher: EventPublisher, keys: KeyStore) -> SsoContainer:
    """Wire sso: database, hashing, tokens, use cases and its outbox relay."""
    target = sso_database(settings)
    engine, database = open_databases(target)
    read_target = sso_read_database(settings)
    read_database = open_databases(read_target)[1] if read_target else None
    cfg = settings.sso
    relay = OutboxRelay(database, sso_tables.outbox, SSO_EVENTS, publisher,
                        batch_size=settings.events.relay_batch_size,
                        poll_interval=settings.events.relay_poll_interval_seconds,
                        max_backoff=settings.events.relay_max_backoff_seconds,
                        # Longer than any delivery takes to succeed or fail (the producer's
                        # message timeout): only a dead relay's rows are ever claimed again.
                        lease_seconds=settings.events.kafka.delivery_timeout_seconds + 5.0)
    issuer = TokenIssuer(keys, cfg.issuer, cfg.access_token_ttl_seconds,
                         cfg.refresh_token_ttl_seconds)
    verifier = TokenVerifier(keys, cfg.issuer, max_lifetimes={
        "access": cfg.access_token_ttl_seconds, "refresh": cfg.refresh_token_ttl_seconds})
    passwords = PasswordHasher(cfg.argon2)
    service = AuthService(lambda: SqlSsoUnitOfWork(database, relay=relay),
                          passwords, issuer, verifier, cfg,
                          read_uow=lambda: SqlSsoUnitOfWork(database, read_only=True),
                          replica_uow=(lambda: SqlSsoUnitOfWork(read_database, read_only=True))
                          if read_database is not None else None)
    return SsoContainer(cfg, target, engine, database, keys, service, relay, read_database,
                        passwords)


def ledger_adapters(coalesce: bool, database: Database, read_database: Database | None,
                    uow: Callable[[], SqlLoyaltyUnitOfWork],
                    read_uow: Callable[[], SqlLoyaltyUnitOfWork]
                    ) -> tuple[AccountReads, Movements]:
    """The adapters of the ledger's two ports: coalesced where the database is PostgreSQL and
    ``loyalty.coalesce`` is on (docs/performance.md), a unit of work per request otherwise."""
    plain_reads, plain_movements = UnitOfWorkAccountReads(read_uow), UnitOfWorkMovements(uow)
    if not coalesce or database.dialect != "postgresql":
        return plain_reads, plain_movements
    reads_from = read_database or database
    reads: AccountReads = CoalescedAccountReads(reads_from) \
        if reads_from.dialect == "postgresql" else plain_reads
    return reads, CoalescedMovements(database, keyed=plain_movements)


def build_loyalty(settings: Settings, keys: KeyProvider,
                  knows_key: Callable[[str], Awaitable[bool]] | None = None,
                  owners: OwnerDirectory | None = None) -> LoyaltyContainer:
    """Wire loyalty: database, local token verification with revocations, use cases."""
    target = loyalty_database(settings)
    engine, database = open_databases(target)
    read_target = loyalty_read_database(settings)
    read_database = open_databases(read_target)[1] if read_target else None
    cfg = settings.loyalty

    def uow() -> SqlLoyaltyUnitOfWork:
        return SqlLoyaltyUnitOfWork(database)

    def read_uow() -> SqlLoyaltyUnitOfWork:
        return SqlLoyaltyUnitOfWork(read_database or database, read_only=True)

    revoked = RevokedSessions()
    verifier = TokenVerifier(keys, settings.token_issuer,
                             max_lifetimes=settings.loyalty_token_lifetimes)
    authenticator = Authenticator(verifier, revoked, knows_key)
    accounts, movements = ledger_adapters(cfg.coalesce, database, read_database, uow, read_uow)
    service = LedgerService(uow, idempotency_ttl_hours=cfg.idempotency_ttl_hours,
                            owners=owners, read_uow=read_uow, accounts=accounts,
                            movements=movements)
    handlers = LoyaltyEventHandlers(
        uow, revoked, cfg.welcome_bonus,
        bonus_lifetime=None if cfg.bonus_lifetime_days is None
        else timedelta(days=cfg.bonus_lifetime_days))
    coalescers = [c for c in (accounts, movements)
                  if isinstance(c, CoalescedAccountReads | CoalescedMovements)]
    holds = HoldService(uow, read_uow=read_uow, max_ttl_seconds=cfg.max_hold_ttl_seconds)
    return LoyaltyContainer(cfg, target, engine, database, revoked, authenticator, service,
                            handlers, holds, read_database, coalescers)


def sso_app(container: SsoContainer) -> FastAPI:
    """The sso HTTP application."""
    app = create_app("authloyalty sso", "Users, sessions and tokens.", "sso", __version__)
    app.state.container = container
    sso_http.install(app)
    telemetry.instrument_fastapi(app)
    return app


def loyalty_app(container: LoyaltyContainer) -> FastAPI:
    """The loyalty HTTP application."""
    app = create_app("authloyalty loyalty", "Points ledger. Press Authorize and paste an "
                     "access token from sso's /auth/login or /auth/registration.",
                     "loyalty", __version__)
    app.state.container = container
    loyalty_http.install(app)
    telemetry.instrument_fastapi(app)
    return app


async def reload_keys(keys: KeyStore) -> None:
    """Reread the signing-key directory (off the event loop) and log a rotation."""
    if await asyncio.to_thread(keys.reload):
        log.info("signing keys reloaded: %s", [k["kid"] for k in keys.jwks()["keys"]])


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
    loop_lag_interval: float = LOOP_LAG_INTERVAL_SECONDS

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
            user_id, created = await self.sso.service.ensure_admin(admin.email, admin.password)
            # The user id, not the email: logs keep no personal data.
            log.info("bootstrap admin %s (user_id %s)", "created" if created else "promoted",
                     user_id)
        self.tasks = [
            asyncio.create_task(self.sso.relay.run_forever(), name="outbox-relay"),
            asyncio.create_task(_every(self.settings.maintenance_interval_seconds,
                                       self._maintenance, "maintenance")),
            asyncio.create_task(_every(self.settings.loyalty.expiry_sweep_interval_seconds,
                                       self.loyalty.service.expire_lots, "lot expiry")),
            asyncio.create_task(_every(self.settings.sso.keys_reload_seconds,
                                       self._reload_keys, "keys")),
            # One loop serves both services: its lag is each one's.
            asyncio.create_task(watch_loop_lag(("sso", "loyalty"), self.loop_lag_interval),
                                name="loop-lag"),
        ]

    async def _reload_keys(self) -> None:
        await reload_keys(self.sso.keys)

    async def _maintenance(self) -> None:
        await self.sso.service.purge_login_failures()
        await self.sso.service.purge_deleted_users()
        await self.loyalty.service.purge_idempotency_keys()
        await self.loyalty.handlers.purge_revocations()
        await self.loyalty.holds.expire_due()

    async def stop(self) -> None:
        """Stop background work (after a last relay pass) and close the databases."""
        await _cancel(self.tasks)
        with contextlib.suppress(Exception):
            await self.sso.relay.run_once()
        await self.sso.dispose()
        await self.loyalty.dispose()


class SsoOwnerDirectory:
    """loyalty's owner lookup answered by sso's use case in the same process (embedded).

    It lives here, where both services are known, so that loyalty never imports sso."""

    def __init__(self, service: AuthService) -> None:
        self._service = service

    async def owner(self, user_id: UUID, access_token: str) -> Owner | None:
        """The owner of ``user_id``; in process, the caller was checked by loyalty already."""
        try:
            user = await self._service.profile(user_id)
        except UserNotFound:
            return None
        return Owner(user_id=user.id, email=user.email, name=user.name,
                     birthday=user.birthday.isoformat() if user.birthday else None,
                     is_admin=user.is_admin)


def build_embedded(settings: Settings) -> EmbeddedSystem:
    """sso and loyalty in one process, sharing keys in memory and an in-process bus."""
    bus = InProcessBus()
    keys = load_keys(settings)
    sso = build_sso(settings, bus, keys)
    loyalty = build_loyalty(settings, keys, owners=SsoOwnerDirectory(sso.service))
    for event_type, handler in loyalty.handlers.by_event().items():
        bus.subscribe(event_type, handler)
    return EmbeddedSystem(settings, sso, loyalty, bus)


def instance_id(settings: Settings) -> str:
    """This loyalty replica's name (its own consumer group for session revocations)."""
    configured = settings.events.kafka.instance_id
    return configured or f"{socket.gethostname()}-{settings.loyalty.http_port}"


def kafka_publisher(settings: Settings) -> KafkaPublisher:
    """The relay's publisher on Kafka, serialising through the Schema Registry."""
    cfg = settings.events.kafka
    return KafkaPublisher(cfg, EventEncoder(cfg, SSO_EVENTS, schema_registry(cfg)))


@dataclass
class SsoProcess:
    """sso on its own (production): HTTP, and the outbox relay unless it runs elsewhere."""

    settings: Settings
    sso: SsoContainer
    publisher: KafkaPublisher
    run_relay: bool = True
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        """Check the schema, create topics, start the relay and maintenance."""
        await ensure_current("sso", self.sso.engine)
        if self.settings.events.kafka.create_topics:
            await asyncio.to_thread(ensure_topics, self.settings.events.kafka)
        if self.run_relay:
            try:
                await asyncio.to_thread(self.publisher.prepare)
            except Exception as exc:  # Kafka may come later; the first events will wait
                log.warning("Kafka producers not prepared: %s", exc)
            self.tasks.append(asyncio.create_task(self.sso.relay.run_forever()))
        self.tasks.append(asyncio.create_task(_every(
            self.settings.maintenance_interval_seconds, self._maintenance, "maintenance")))
        self.tasks.append(asyncio.create_task(_every(
            self.settings.sso.keys_reload_seconds, self._reload_keys, "keys")))
        self.tasks.append(asyncio.create_task(watch_loop_lag(("sso",)), name="loop-lag"))

    async def _reload_keys(self) -> None:
        await reload_keys(self.sso.keys)

    async def _maintenance(self) -> None:
        await self.sso.service.purge_login_failures()
        await self.sso.service.purge_deleted_users()

    async def stop(self) -> None:
        """Stop background work and release clients."""
        await _cancel(self.tasks)
        await asyncio.to_thread(self.publisher.close)
        await self.sso.dispose()


def build_sso_process(settings: Settings, *, run_relay: bool = True) -> SsoProcess:
    """sso with a Kafka relay."""
    publisher = kafka_publisher(settings)
    return SsoProcess(settings, build_sso(settings, publisher, load_keys(settings)), publisher,
                      run_relay)


@dataclass
class LoyaltyProcess:
    """loyalty on its own: HTTP, keys from sso's JWKS, Kafka consumers."""

    settings: Settings
    loyalty: LoyaltyContainer
    jwks: JwksKeyProvider
    consumers: list[KafkaEventConsumer | KafkaTopicReader]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        """Check the schema, rebuild revocations, fetch keys, start consuming."""
        await ensure_current("loyalty", self.loyalty.engine)
        if self.settings.events.kafka.create_topics:
            await asyncio.to_thread(ensure_topics, self.settings.events.kafka)
        await self.loyalty.handlers.load_revocations()
        try:
            await self.jwks.refresh()
        except Exception as exc:  # sso may start later; unknown kids trigger a refetch
            log.warning("JWKS not loaded yet: %s", exc)
        self.tasks += [asyncio.create_task(c.run()) for c in self.consumers]
        self.tasks.append(asyncio.create_task(self.jwks.refresh_forever()))
        self.tasks.append(asyncio.create_task(_every(
            self.settings.maintenance_interval_seconds, self._maintenance, "maintenance")))
        self.tasks.append(asyncio.create_task(_every(
            self.settings.loyalty.expiry_sweep_interval_seconds,
            self.loyalty.service.expire_lots, "lot expiry")))
        self.tasks.append(asyncio.create_task(watch_loop_lag(("loyalty",)), name="loop-lag"))

    async def _maintenance(self) -> None:
        await self.loyalty.service.purge_idempotency_keys()
        await self.loyalty.handlers.purge_revocations()
        await self.loyalty.holds.expire_due()

    async def stop(self) -> None:
        """Let consumers finish their record and commit, then close."""
        for consumer in self.consumers:
            consumer.stop()
        consumer_tasks = self.tasks[: len(self.consumers)]
        await asyncio.wait(consumer_tasks, timeout=15.0)
        await _cancel(self.tasks)
        await self.loyalty.dispose()


def build_loyalty_process(settings: Settings) -> LoyaltyProcess:
    """loyalty verifying tokens with sso's JWKS and consuming sso's events from Kafka."""
    if not settings.loyalty.jwks_url:
        raise ConfigError("loyalty.jwks_url is required when loyalty runs on its own")
    jwks = JwksKeyProvider(settings.loyalty.jwks_url,
                           min_refresh_seconds=settings.loyalty.jwks_min_refresh_seconds)
    owners = None
    if settings.loyalty.sso_grpc_target:
        owners = GrpcOwnerDirectory(settings.loyalty.sso_grpc_target,
                                    settings.loyalty.sso_grpc_deadline_seconds)
    loyalty = build_loyalty(settings, jwks, knows_key=jwks.knows, owners=owners)
    cfg = settings.events.kafka
    codec = EventDecoder(cfg, LOYALTY_EVENTS)
    handlers = loyalty.handlers
    # Nobody is authenticated until the revocation reader has read every revocation that
    # was published before this replica started (platform/kafka_reader.py says why it reads
    # without a consumer group).
    loyalty.revoked.set_complete(False)
    consumers: list[KafkaEventConsumer | KafkaTopicReader] = [
        KafkaEventConsumer(cfg, codec, {UserRegistered: handlers.user_registered,
                                        UserDeleted: handlers.user_deleted,
                                        UserRestored: handlers.user_restored},
                           [cfg.registration_topic, cfg.accounts_topic], cfg.consumer_group),
        KafkaTopicReader(cfg, codec, cfg.sessions_topic, handlers.remember_revocation,
                         since_seconds=revocation_replay_seconds(settings),
                         name=f"{cfg.consumer_group}-revocations-{instance_id(settings)}",
                         on_caught_up=loyalty.revoked.set_complete),
    ]
    return LoyaltyProcess(settings, loyalty, jwks, consumers)


# Clocks of sso's hosts and the brokers may differ by this much.
CLOCK_SKEW_SECONDS = 60


def revocation_replay_seconds(settings: Settings) -> float:
    """How far back a starting loyalty replica reads revocations: loyalty refuses access
    tokens living longer than ``loyalty_token_lifetimes["access"]``, so a revocation older
    than that (plus clock skew) concerns no token it would still accept."""
    return float(settings.loyalty_token_lifetimes["access"] + CLOCK_SKEW_SECONDS)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
