"""Kafka as the event bus: the outbox relay's publisher and an at-least-once consumer.

Consumed offsets are stored only after the handler's database transaction committed and are
committed by librdkafka every ``commit_interval_ms``; a crash in between means a redelivery,
which the handlers recognise (inbox). Records that can never be processed go to
``<topic>.dlq`` with the error in their headers, and the partition moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from confluent_kafka.schema_registry import SchemaRegistryClient
from opentelemetry import propagate
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from authloyalty.platform import metrics, telemetry
from authloyalty.platform.bus import Envelope, EventHandler, IntegrationEvent, PermanentEventError
from authloyalty.platform.database import DatabaseUnavailable
from authloyalty.platform.kafka_codec import EventDecoder, EventEncoder, Headers, Record
from authloyalty.platform.settings import FIXED_KAFKA_CLIENT_SETTINGS, KafkaSettings

log = logging.getLogger(__name__)


def schema_registry(settings: KafkaSettings) -> SchemaRegistryClient:
    """A Schema Registry client (``mock://`` URLs give the in-process mock).

    One quick retry and a 5 s timeout: the client's default (3 retries up to 20 s apart) would
    hold the relay for seconds per event while the registry is down; the outbox retries with
    its own backoff instead."""
    return SchemaRegistryClient.new_client({
        "url": settings.schema_registry_url, "timeout": 5, "max.retries": 1,
        "retries.wait.ms": 100, "retries.max.wait.ms": 500})


_CLIENT_LOG = logging.getLogger("authloyalty.kafka.client")


def client_conf(settings: KafkaSettings, tuning: dict[str, Any] | None = None,
                **fixed: Any) -> dict[str, Any]:
    """librdkafka settings of a client: ``tuning`` (our defaults for it), then the configured
    ``events.kafka.client`` (which may override them), then ``fixed`` (what correctness needs:
    the settings refuse to configure those, :data:`~authloyalty.platform.settings.
    FIXED_KAFKA_CLIENT_SETTINGS`)."""
    # What a client fixes must be what the settings refuse, or an operator's value for it
    # would be overridden without a word.
    unlisted = fixed.keys() - FIXED_KAFKA_CLIENT_SETTINGS
    if unlisted:
        raise ValueError(f"not in FIXED_KAFKA_CLIENT_SETTINGS: {', '.join(sorted(unlisted))}")
    # librdkafka's own messages go through our structured logs, not raw stderr.
    return {"bootstrap.servers": settings.bootstrap_servers, "logger": _CLIENT_LOG,
            **(tuning or {}), **settings.client, **fixed}


def sessions_replication_factor(configured: int, brokers: int) -> int:
    """The sessions topic's replication factor: as configured, but below the number of
    brokers, so that whichever broker dies some partition does not have it among its replicas
    and takes a revocation at once (:class:`KafkaPublisher` writes each one to every partition).
    With ``acks=all`` a partition waits for every in-sync replica, a dead one included, until
    the controller fences that broker. Each revocation still lives on every broker that holds
    any partition of the topic."""
    if brokers <= 1:
        return configured
    return max(1, min(configured, brokers - 1))


def ensure_topics(settings: KafkaSettings, timeout: float = 15.0) -> None:
    """Create our topics if they do not exist (idempotent)."""
    admin = AdminClient(client_conf(settings))
    retention = str(settings.sessions_retention_hours * 3600 * 1000)
    brokers = len(admin.list_topics(timeout=timeout).brokers)
    rf = settings.replication_factor
    sessions_rf = sessions_replication_factor(rf, brokers)
    wanted = [
        _new_topic(settings, settings.registration_topic, settings.topic_partitions, rf),
        _new_topic(settings, settings.registration_topic + settings.dead_letter_suffix, 1, rf),
        _new_topic(settings, settings.sessions_topic, settings.topic_partitions, sessions_rf,
                   {"retention.ms": retention}),
        _new_topic(settings, settings.sessions_topic + settings.dead_letter_suffix, 1, rf),
        _new_topic(settings, settings.accounts_topic, settings.topic_partitions, rf),
        _new_topic(settings, settings.accounts_topic + settings.dead_letter_suffix, 1, rf),
    ]
    for topic, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        else:
            log.info("created topic %s", topic)


def _new_topic(settings: KafkaSettings, name: str, partitions: int, replicas: int,
               config: Mapping[str, str] | None = None) -> NewTopic:
    """A topic whose acknowledged records are on ``min(min_insync_replicas, replicas)``
    brokers (3 brokers: RF 3, 2 in sync; one broker: RF 1, 1)."""
    min_isr = min(settings.min_insync_replicas, replicas)
    return NewTopic(name, partitions, replicas,
                    config={"min.insync.replicas": str(min_isr), **(config or {})})


# How long a delivery poller waits when nothing arrives (a delivery ends the wait at once).
_POLL_SECONDS = 0.25

# Producer settings chosen so that a broker that dies delays only the records whose partition
# needs it, for about as long as Kafka needs to move its partitions (deploy/README.md, "Broker
# failure": with 3 brokers and the devstack broker session of 3 s,
# every acks=all write to a partition with the dead broker in its ISR waited 5.1-6.3 s).
# Exactly-once delivery needs these (no configuration overrides them).
_PRODUCER_FIXED: dict[str, Any] = {"enable.idempotence": True, "acks": "all"}
# Defaults that `events.kafka.client` may override.
_PRODUCER_TUNING: dict[str, Any] = {
    # The relay hands over a whole batch of rows at once, and revocations must leave at once:
    # waiting for more records (librdkafka's default is 5 ms) only delayed every event.
    "linger.ms": 0,
    # Leaders that move without an error on our side (a restarted broker taking back its
    # preferred partitions) are learnt within 10 s; after an error librdkafka refreshes at once
    # and then every topic.metadata.refresh.fast.interval.ms (100 ms) until leaders are known.
    "topic.metadata.refresh.interval.ms": 10_000,
    "metadata.max.age.ms": 30_000,
    # Retries of a partition whose leader is moving: quick, and never more than 0.25 s apart.
    "retry.backoff.ms": 50,
    "retry.backoff.max.ms": 250,
    # A restarted broker is reconnected within a second, not the default 10 s.
    "reconnect.backoff.ms": 50,
    "reconnect.backoff.max.ms": 1_000,
    # A broker host that vanishes without closing its sockets is given up on in seconds. The
    # request timeout also bounds how long the broker may hold an acks=all write: retried
    # after that (idempotence makes the retry harmless).
    "socket.connection.setup.timeout.ms": 3_000,
    "request.timeout.ms": 5_000,
    "socket.keepalive.enable": True,
}
_PARTITIONS_TTL_SECONDS = 60.0


class _Delivery:
    """One event's outcome: the first acknowledged copy succeeds it; it fails only when every
    copy failed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[str | None],
                 span: Span, copies: int) -> None:
        self._loop = loop
        self._future = future
        self._span = span
        self._left = copies
        self._settled = False
        self._lock = threading.Lock()

    def settle(self, result: str | None) -> None:
        with self._lock:
            if self._settled:
                return
            self._settled = True
        if result is not None:
            self._span.set_status(Status(StatusCode.ERROR, result))
        self._span.end()
        self._loop.call_soon_threadsafe(_resolve, self._future, result)

    def on_delivery(self, err: KafkaError | None, _msg: Message | None) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if err is None:
            self.settle(None)
        elif last:
            self.settle(f"kafka: {err.str()}")


def _resolve(future: asyncio.Future[str | None], result: str | None) -> None:
    if not future.done():
        future.set_result(result)


class KafkaPublisher:
    """The outbox relay's :class:`~authloyalty.platform.bus.StreamingPublisher` on Kafka.

    Each event's future resolves when the broker acknowledges it (``acks=all``), independently
    of the others: an event for a partition whose leader answers is not held back by one whose
    leader died. Every topic has its own producer, because Kafka answers a produce request
    only when every partition in it is acknowledged, so batches of two topics sharing a
    connection would share their delays too.

    Events whose table row says ``every_partition`` (revocations) are written to every
    partition of their topic, and count as published when the first copy is acknowledged: the
    topic is created with a replication factor one below the number of brokers
    (:func:`ensure_topics`), so whichever broker dies, some partition does not have it among
    its replicas and acknowledges at once. Loyalty reads every partition
    (:mod:`authloyalty.platform.kafka_reader`) and a repeated revocation changes nothing.

    Each partition of such a topic has a producer (a connection) of its own, for the same
    reason as each topic: a broker answers the requests of one connection in order, and one
    producer sends a broker the batches of every partition it leads in one request. Once
    leaders have moved (a broker killed earlier and back, leadership not yet rebalanced), the
    broker leading the partition without the dead broker often leads one with it as well; with
    a shared producer the copy that could be acknowledged at once waited for the dead broker
    to be fenced (3.2-4.6 s in the fault run, ``bench/faults.py``).
    """

    def __init__(self, settings: KafkaSettings, codec: EventEncoder) -> None:
        self._settings = settings
        self._codec = codec
        self._tracer = telemetry.tracer()
        self._timeout = settings.delivery_timeout_seconds
        self._fan_out = codec.fan_out_topics()
        # By topic, and by (topic, partition) for the fan-out topics' partitions.
        self._producers: dict[str | tuple[str, int], Producer] = {}
        self._partitions: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._pollers: list[threading.Thread] = []

    def prepare(self) -> None:
        """Connect the producers and learn the fan-out topics' partitions now (blocking), so
        that the first events after a start do not wait for it (~0.5 s measured)."""
        for topic in self._codec.topics():
            for partition in self._partitions_of(topic, self._producer(topic)):
                if partition is not None:  # connect each partition's producer too
                    with contextlib.suppress(KafkaException):
                        self._producer(topic, partition).list_topics(topic, timeout=2.0)

    async def publish(self, events: Sequence[Envelope[Any]]) -> list[str | None]:
        """Produce every event and wait for all the broker's acknowledgements."""
        return list(await asyncio.gather(*await self.send(events)))

    async def send(self, events: Sequence[Envelope[Any]]) -> list[asyncio.Future[str | None]]:
        """Produce every event; each future resolves with its own outcome (None: delivered)."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[str | None]] = [loop.create_future() for _ in events]
        await asyncio.to_thread(self._produce_all, events, futures, loop)
        return futures

    def _producer(self, topic: str, partition: int | None = None) -> Producer:
        """The topic's producer, or for one partition of a fan-out topic that partition's."""
        key: str | tuple[str, int] = topic if partition is None else (topic, partition)
        with self._lock:
            producer = self._producers.get(key)
            if producer is None:
                producer = Producer(client_conf(
                    self._settings, _PRODUCER_TUNING, **_PRODUCER_FIXED,
                    **{"message.timeout.ms": int(self._timeout * 1000)}))
                self._producers[key] = producer
                poller = threading.Thread(target=self._poll_forever, args=(producer,),
                                          name=f"kafka-deliveries-{key}", daemon=True)
                poller.start()
                self._pollers.append(poller)
            return producer

    def _poll_forever(self, producer: Producer) -> None:
        # Delivery callbacks run here as acknowledgements arrive (poll returns as soon as it
        # has served one), not when a batch is flushed. One thread per producer, each waking
        # a few times a second when idle: a single thread polling every producer in turn
        # with a short timeout woke hundreds of times a second, and each wake-up takes the
        # GIL from the event loop's thread.
        while not self._closed.is_set():
            producer.poll(_POLL_SECONDS)

    def _partitions_of(self, topic: str, producer: Producer) -> list[int | None]:
        """Every partition for fan-out topics (looked up at most once a minute); otherwise
        [None]: the key chooses."""
        if topic not in self._fan_out:
            return [None]
        known = self._partitions.get(topic)
        if known is None or time.monotonic() - known[0] > _PARTITIONS_TTL_SECONDS:
            try:
                count = len(producer.list_topics(topic, timeout=2.0).topics[topic].partitions)
            except (KafkaException, KeyError) as exc:
                if known is None:
                    log.warning("partitions of %s unknown (%s); publishing by key", topic, exc)
                    return [None]
                count = known[1]
            known = (time.monotonic(), count) if count else known
            if known is None:
                return [None]
            self._partitions[topic] = known
        return list(range(known[1]))

    def _produce_all(self, events: Sequence[Envelope[Any]],
                     futures: list[asyncio.Future[str | None]],
                     loop: asyncio.AbstractEventLoop) -> None:
        for event, future in zip(events, futures, strict=True):
            span = self._tracer.start_span(
                f"{self._codec.topic_for(event.event)} publish", kind=SpanKind.PRODUCER,
                context=propagate.extract(dict(event.headers)),
                attributes={"messaging.system": "kafka", "messaging.message.id": str(event.id)})
            if telemetry.enabled():
                event = replace(event, headers={**event.headers, **telemetry.headers_of(span)})
            try:
                topic, key, value, headers = self._codec.encode(event)
            except Exception as exc:
                _Delivery(loop, future, span, 1).settle(f"encode: {exc}")
                continue
            partitions = self._partitions_of(topic, self._producer(topic))
            delivery = _Delivery(loop, future, span, len(partitions))
            for partition in partitions:
                self._produce(self._producer(topic, partition), delivery, topic, key, value,
                              headers, partition)

    def _produce(self, producer: Producer, delivery: _Delivery, topic: str, key: Any,
                 value: Any, headers: Any, partition: int | None) -> None:
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                if partition is None:
                    producer.produce(topic, value=value, key=key, headers=headers,
                                     on_delivery=delivery.on_delivery)
                else:
                    producer.produce(topic, value=value, key=key, headers=headers,
                                     partition=partition, on_delivery=delivery.on_delivery)
                return
            except BufferError:  # the local queue is full: wait for acknowledgements
                if time.monotonic() >= deadline:
                    delivery.on_delivery(KafkaError(KafkaError._QUEUE_FULL), None)
                    return
                time.sleep(0.01)
            except KafkaException as exc:
                delivery.on_delivery(exc.args[0], None)
                return

    def close(self) -> None:
        """Deliver what is queued (briefly) and release the clients."""
        for producer in list(self._producers.values()):
            producer.flush(2.0)
        self._closed.set()
        for poller in self._pollers:
            poller.join(2.0)
        self._codec.close()


def header_list(headers: Any) -> Headers:
    """A record's headers as a list of pairs."""
    if headers is None:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


def _is_transient(exc: BaseException) -> bool:
    """Failures of our infrastructure (database down), not of the record: retry forever."""
    return isinstance(exc, DatabaseUnavailable | OSError | TimeoutError)


class KafkaEventConsumer:
    """Feeds records of ``topics`` to handlers by event type, at least once, in order."""

    def __init__(self, settings: KafkaSettings, codec: EventDecoder,
                 handlers: Mapping[type[IntegrationEvent], EventHandler],
                 topics: Sequence[str], group_id: str,
                 *, max_backoff_seconds: float = 10.0) -> None:
        self._settings = settings
        self._codec = codec
        self._handlers = dict(handlers)
        self._topics = list(topics)
        self._group_id = group_id
        self._max_backoff = max_backoff_seconds
        for topic in self._topics:  # exported at 0: increase() sees the first dead letter
            metrics.DEAD_LETTERS.labels(topic)
        self._stopping = asyncio.Event()
        self._consumer = self._new_consumer()
        self._dead_letters = Producer(client_conf(settings, acks="all"))

    def _new_consumer(self) -> Consumer:
        settings, group_id = self._settings, self._group_id
        return Consumer(client_conf(settings, {
            "client.id": f"{group_id}-{socket.gethostname()}",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            "max.poll.interval.ms": 600000,
            # Revocations must reach every replica within a second: do not let an idle fetch
            # wait long on the broker.
            "fetch.wait.max.ms": 100,
        }, **{
            "group.id": group_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
            "auto.commit.interval.ms": settings.commit_interval_ms,
        }))

    def stop(self) -> None:
        """Finish the record in hand, commit and leave the group."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume until :meth:`stop`; a failed consumer is replaced, never silently lost."""
        while not self._stopping.is_set():
            try:
                await self._run_once()
            except Exception:
                log.exception("consumer %s failed; starting a new one", self._group_id)
                await asyncio.sleep(1.0)
                self._consumer = self._new_consumer()
        await asyncio.to_thread(self._dead_letters.flush, 5.0)

    async def _run_once(self) -> None:
        """Consume until stopped or failed; always closes the consumer (committing offsets)."""
        self._consumer.subscribe(self._topics)
        lag_task = asyncio.create_task(self._report_lag())
        try:
            while not self._stopping.is_set():
                message = await asyncio.to_thread(self._consumer.poll, 0.5)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    self._log_error(error)
                    continue
                await self._process(message)
        finally:
            lag_task.cancel()
            await asyncio.to_thread(self._consumer.close)

    @staticmethod
    def _log_error(error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        log.warning("consumer error: %s", error.str())

    async def _process(self, message: Message) -> None:
        record = Record(topic=message.topic() or "", partition=message.partition() or 0,
                        offset=message.offset() or 0, key=message.key(), value=message.value(),
                        headers=header_list(message.headers()))
        attempts = 0
        while True:
            attempts += 1
            try:
                event = self._codec.decode(record)
                handler = self._handlers.get(type(event.event))
                if handler is None:
                    raise PermanentEventError(f"no handler for {event.name}")
                with telemetry.span_from(dict(event.headers), f"{record.topic} process",
                                         SpanKind.CONSUMER,
                                         {"messaging.system": "kafka",
                                          "messaging.kafka.offset": record.offset}):
                    await handler(event)
                self._observe_applied(message)
                break
            except PermanentEventError as exc:
                await self._dead_letter(record, str(exc), attempts)
                break
            except Exception as exc:
                if not _is_transient(exc) and attempts >= self._settings.max_attempts:
                    await self._dead_letter(record, f"{type(exc).__name__}: {exc}", attempts)
                    break
                metrics.EVENTS_CONSUMED.labels(record.topic, "retry").inc()
                log.warning("record %s/%d@%d failed (attempt %d), retrying: %r", record.topic,
                            record.partition, record.offset, attempts, exc)
                delay = min(self._max_backoff, 0.2 * 2 ** min(attempts, 10))
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                except TimeoutError:
                    continue
                return  # stopping: leave the offset uncommitted, the record comes again
        # Only now may the offset be committed: the effect is durable.
        try:
            self._consumer.store_offsets(message=message)
        except KafkaException as exc:
            # The partition moved to another consumer meanwhile; it will redeliver the record
            # and the inbox will recognise it.
            log.warning("offset of %s/%d@%d not stored: %s", record.topic, record.partition,
                        record.offset, exc)

    @staticmethod
    def _observe_applied(message: Message) -> None:
        """How long after the relay produced it the record's effect was committed here."""
        kind, stamp = message.timestamp()
        if kind != TIMESTAMP_NOT_AVAILABLE:
            metrics.EVENT_APPLIED.labels(message.topic() or "").observe(
                max(0.0, time.time() - stamp / 1000))

    async def _dead_letter(self, record: Record, error: str, attempts: int) -> None:
        topic = record.topic + self._settings.dead_letter_suffix
        headers: Headers = [(k, v) for k, v in record.headers if v is not None]
        headers += [
            ("dlq-error", error[:1000].encode()),
            ("dlq-original-topic", record.topic.encode()),
            ("dlq-original-partition", str(record.partition).encode()),
            ("dlq-original-offset", str(record.offset).encode()),
            ("dlq-attempts", str(attempts).encode()),
        ]
        failure: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failure.append(err.str())

        def produce() -> int:
            self._dead_letters.produce(topic, value=record.value, key=record.key,
                                       headers=headers, on_delivery=on_delivery)
            return int(self._dead_letters.flush(self._settings.delivery_timeout_seconds))

        while True:
            remaining = await asyncio.to_thread(produce)
            if remaining == 0 and not failure:
                break
            log.warning("cannot write to %s yet (%s); retrying", topic, failure or "timeout")
            failure.clear()
            await asyncio.sleep(1.0)
        metrics.DEAD_LETTERS.labels(record.topic).inc()
        log.error("record %s/%d@%d dead-lettered to %s: %s", record.topic, record.partition,
                  record.offset, topic, error)

    async def _report_lag(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            try:
                lags = await asyncio.to_thread(self._lags)
            except KafkaException as exc:
                log.debug("lag unavailable: %s", exc)
                continue
            for (topic, partition), lag in lags.items():
                metrics.CONSUMER_LAG.labels(self._group_id, topic, str(partition)).set(lag)

    def _lags(self) -> dict[tuple[str, int], int]:
        assigned = self._consumer.assignment()
        if not assigned:
            return {}
        lags: dict[tuple[str, int], int] = {}
        for tp in self._consumer.position(assigned):
            # Cached watermarks come with the fetches: asking the broker here would queue
            # behind the consumer's own fetch requests and delay delivery.
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), cached=True)
            position = tp.offset if tp.offset >= 0 else high
            lags[(tp.topic, tp.partition)] = max(0, high - position)
        return lags
