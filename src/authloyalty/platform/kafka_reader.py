"""A whole Kafka topic read by one process without a consumer group, from a point in time.

Each loyalty replica must see every session revocation, and must know when it has seen every
revocation that exists: until then it may be accepting a session that has ended. A consumer
group cannot give that quickly after a crash. A replica killed with SIGKILL never leaves its
group, so its successor (same group, since the group names the replica) gets no partitions
until the broker has waited out the dead member's ``session.timeout.ms`` (10 s here, 45 s by
Kafka's default): in a fault campaign (replicas SIGKILLed under load) restarted replicas
honoured new logouts only ~9.8 s after the kill. Static membership (``group.instance.id``)
would let the successor take the old member's place at once, but only when the name is
stable across restarts and unique among live replicas (two replicas configured with one name
fence each other), and it still relies on committed offsets that lag the effects by the
commit interval.

So this reader joins no group: it looks the partitions up, asks for the offsets of the first
records at or after ``now - since_seconds`` (``offsets_for_times``) and the end of every
partition (high watermarks), assigns every partition itself and reads. It is *caught up* once it
has read past the ends it saw at start: every record published before it started has then been
handled. Assignment is immediate, so a restarted replica is caught up in roughly the time a few
broker round trips and the replayed records take. Nothing is committed: a replica's memory is
rebuilt from the topic at every start, which is why the topic's retention must exceed
``since_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from authloyalty.platform.bus import EventHandler, PermanentEventError
from authloyalty.platform.kafka import client_conf, header_list
from authloyalty.platform.kafka_codec import EventDecoder, Record
from authloyalty.platform.settings import KafkaSettings

log = logging.getLogger(__name__)

_LOOKUP_TIMEOUT = 5.0
_BATCH = 500


class KafkaTopicReader:
    """Feeds every record of ``topic`` published since ``now - since_seconds`` to ``handler``
    and reports through ``on_caught_up`` whether it has reached the end seen at its start."""

    def __init__(self, settings: KafkaSettings, codec: EventDecoder, topic: str,
                 handler: EventHandler, *, since_seconds: float, name: str,
                 on_caught_up: Callable[[bool], None]) -> None:
        self._settings = settings
        self._codec = codec
        self._topic = topic
        self._handler = handler
        self._since = since_seconds
        self._name = name
        self._on_caught_up = on_caught_up
        self._stopping = asyncio.Event()

    def _new_consumer(self) -> Consumer:
        # librdkafka wants a group.id, but assign() never joins the group and nothing is
        # committed to it.
        return Consumer(client_conf(self._settings, {
            "client.id": f"{self._name}-{socket.gethostname()}",
            # A revocation must reach every replica within a second: idle fetches return
            # quickly, and a partition whose leader moved is looked up again within 0.25 s.
            "fetch.wait.max.ms": 100,
            "fetch.error.backoff.ms": 100,
            "topic.metadata.refresh.fast.interval.ms": 100,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
        }, **{
            "group.id": self._name,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
        }))

    def stop(self) -> None:
        """Stop reading (nothing to commit)."""
        self._stopping.set()

    async def run(self) -> None:
        """Read until :meth:`stop`; a failed consumer is replaced, and the replica counts as
        behind until the new one has caught up again."""
        while not self._stopping.is_set():
            try:
                await self._run_once()
            except Exception:
                self._on_caught_up(False)
                log.exception("reader of %s failed; starting a new one", self._topic)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=0.5)

    async def _run_once(self) -> None:
        consumer = self._new_consumer()
        try:
            started = time.monotonic()
            ends = await asyncio.to_thread(self._assign_from, consumer)
            behind = {p for p, (start, end) in ends.items() if start < end}
            replayed = 0
            if not behind:
                self._caught_up(started, replayed)
            while not self._stopping.is_set():
                messages = await asyncio.to_thread(_fetch, consumer)
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            log.warning("reader of %s: %s", self._topic, error.str())
                        continue
                    await self._handle(message)
                    if behind:
                        replayed += 1
                if behind:
                    positions = await asyncio.to_thread(
                        consumer.position, [TopicPartition(self._topic, p) for p in behind])
                    behind -= {tp.partition for tp in positions
                               if tp.offset >= ends[tp.partition][1]}
                    if not behind:
                        self._caught_up(started, replayed)
        finally:
            await asyncio.to_thread(consumer.close)

    def _caught_up(self, started: float, replayed: int) -> None:
        log.info("%s caught up in %.3f s (%d records replayed)", self._topic,
                 time.monotonic() - started, replayed)
        self._on_caught_up(True)

    def _assign_from(self, consumer: Consumer) -> dict[int, tuple[int, int]]:
        """Assign every partition from ``now - since``; partition → (start, end at start)."""
        metadata = consumer.list_topics(self._topic, timeout=_LOOKUP_TIMEOUT)
        topic = metadata.topics.get(self._topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise RuntimeError(f"topic {self._topic} not available: "
                               f"{topic.error if topic else 'unknown'}")
        partitions = sorted(topic.partitions)
        # Ends first: a record published between the two look-ups is at or after its
        # partition's end, so it is read whatever offsets_for_times says.
        ends = {p: consumer.get_watermark_offsets(TopicPartition(self._topic, p),
                                                  timeout=_LOOKUP_TIMEOUT, cached=False)[1]
                for p in partitions}
        since_ms = int((time.time() - self._since) * 1000)
        found = consumer.offsets_for_times(
            [TopicPartition(self._topic, p, since_ms) for p in partitions],
            timeout=_LOOKUP_TIMEOUT)
        starts: dict[int, int] = {}
        for tp in found:
            if tp.error is not None:
                raise RuntimeError(f"offsets of {self._topic}/{tp.partition}: {tp.error}")
            # -1: no record that recent, so start at the end seen above.
            starts[tp.partition] = tp.offset if tp.offset >= 0 else ends[tp.partition]
        consumer.assign([TopicPartition(self._topic, p, starts[p]) for p in partitions])
        return {p: (starts[p], ends[p]) for p in partitions}

    async def _handle(self, message: Message) -> None:
        record = Record(topic=message.topic() or "", partition=message.partition() or 0,
                        offset=message.offset() or 0, key=message.key(), value=message.value(),
                        headers=header_list(message.headers()))
        try:
            await self._handler(self._codec.decode(record))
        except PermanentEventError as exc:
            # A record we cannot read revokes nothing; the producer's own tests keep the
            # format right, and stopping here would block every later revocation.
            log.error("record %s/%d@%d skipped: %s", record.topic, record.partition,
                      record.offset, exc)


def _fetch(consumer: Consumer) -> list[Message]:
    """What has arrived, as soon as anything has (at most 0.2 s of waiting).

    ``consume(n, timeout)`` waits for ``n`` records *or* the timeout, so with a quiet topic every
    revocation would sit up to the whole timeout in the client: ``poll`` returns the first record
    at once and ``consume(n, 0)`` takes what is already queued behind it."""
    first = consumer.poll(0.2)
    if first is None:
        return []
    return [first, *consumer.consume(_BATCH - 1, 0)]
