"""Registration → welcome bonus on an idle stack, one registration at a time, stage by stage.

    python bench/event_path.py [--registrations 60] [--broker-warmup 10]
                               [--service-env KEY=VALUE ...]

Deploys what ``make bench`` deploys (durable PostgreSQL, 3 Kafka brokers, 2 sso and 2 loyalty
processes), then registers users one after another, 50 ms apart, each polling
``GET /loyalty/me`` every 2 ms until the bonus is there. Reports three views of the same path:

* the delay the user sees: the registration's 201 → the first 200 of ``GET /loyalty/me``;
* Kafka's part: a plain consumer in a group of its own receives each registration record
  this long after the record's timestamp (set when the relay produced it);
* Kafka alone: 25 ms after each bonus a plain producer (``acks=all``, idempotent, no linger,
  as the relay's) sends a record to a topic of its own with the same partitions and replicas,
  and the same consumer times it the same way;
* the services' histograms (``benchlib/eventpath.py``): the commit → the broker's
  acknowledgement at sso, the record produced → the bonus committed at loyalty.

Nothing else runs, so this is the path's floor, not its behaviour under load (``make bench``'s
``registration_bonus`` scenario is that). ``--service-env`` passes ``AUTHLOYALTY_*`` settings
to every service process, to compare configurations. The brokers are warmed up first as in
``make bench`` (``--broker-warmup 0`` measures them cold).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # devstack/ (not installed)

from benchlib import eventpath
from benchlib.brokerwarm import create_topic, plain_producer
from benchlib.deploy import deploy
from benchlib.stack import PASSWORD, stop_on_sigterm
from benchlib.stats import percentile

PLAIN_TOPIC = "event-path-plain"


def _summary(values: list[float]) -> str:
    ordered = sorted(values)
    if not ordered:
        return "none"
    # Nearest-rank percentiles, as make bench reports them.
    return (f"p50 {percentile(ordered, 50):.1f} ms, p90 {percentile(ordered, 90):.1f}"
            f" ms, max {ordered[-1]:.1f} ms ({len(ordered)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registrations", type=int, default=60)
    parser.add_argument("--broker-warmup", type=float, default=10.0, metavar="SECONDS")
    parser.add_argument("--service-env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    env = dict(item.split("=", 1) for item in args.service_env)
    dep = deploy(users=100, refresh_sessions=0, logout_sessions=0, distinct_hashes=10,
                 sso_processes=2, loyalty_processes=2, service_env=env, brokers=3,
                 broker_warmup=args.broker_warmup)
    stack = dep.stack
    kafka = dep.settings.events.kafka
    topic = kafka.registration_topic
    bootstrap = stack.kafka.bootstrap_servers
    plain = plain_producer(bootstrap)
    received: list[float] = []
    received_plain: list[float] = []
    stop = threading.Event()

    def consume() -> None:
        consumer = Consumer({"bootstrap.servers": bootstrap,
                             "group.id": f"event-path-{uuid.uuid4().hex}",
                             "auto.offset.reset": "latest", "fetch.wait.max.ms": 100})
        consumer.subscribe([topic, PLAIN_TOPIC])
        while not stop.is_set():
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                into = received_plain if message.topic() == PLAIN_TOPIC else received
                into.append(time.time() * 1000 - message.timestamp()[1])
        consumer.close()

    reader = threading.Thread(target=consume)
    try:
        create_topic(AdminClient({"bootstrap.servers": bootstrap}), PLAIN_TOPIC,
                     kafka.topic_partitions, kafka.replication_factor,
                     kafka.min_insync_replicas)
        sso = [f"http://127.0.0.1:{port}" for port in stack.sso_ports]
        before = eventpath.snapshot(sso, stack.loyalty_urls, topic)
        reader.start()
        time.sleep(5)  # the plain consumer joins its group and is assigned the partitions
        delays: list[float] = []
        with httpx.Client(timeout=10) as client:
            for i in range(args.registrations):
                answer = client.post(f"{sso[i % len(sso)]}/auth/registration", json={
                    "email": f"path-{uuid.uuid4().hex[:12]}@example.com",
                    "password": PASSWORD, "name": "Event Path"})
                answer.raise_for_status()
                started = time.perf_counter()
                headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
                loyalty = stack.loyalty_urls[i % len(stack.loyalty_urls)]
                while client.get(f"{loyalty}/loyalty/me", headers=headers).status_code != 200:
                    if time.perf_counter() - started > 30:
                        raise RuntimeError("no bonus within 30 s")
                    time.sleep(0.002)
                delays.append((time.perf_counter() - started) * 1000)
                time.sleep(0.025)
                plain.produce(PLAIN_TOPIC, key=uuid.uuid4().bytes, value=b"plain")
                plain.flush(10)
                time.sleep(0.025)
        time.sleep(1)
        stop.set()
        reader.join()
        path = eventpath.between(before, eventpath.snapshot(sso, stack.loyalty_urls, topic))
        print(f"service settings: {env or 'defaults'}")
        print(f"201 → bonus visible:               {_summary(delays)}")
        print(f"produced → received (plain reader): {_summary(received)}")
        print(f"plain producer → plain reader:      {_summary(received_plain)}")
        for metric, row in path.items():
            print(f"{metric}: {row['events']} events, mean {row['mean_ms']} ms, "
                  f"within 10/25/50 ms: {row['within_ms']}")
    finally:
        stop.set()
        if reader.is_alive():
            reader.join()
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
