"""Every Prometheus metric the services export, declared in one place."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "authloyalty_http_requests_total", "HTTP requests by route and status",
    ["service", "method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "authloyalty_http_request_duration_seconds", "HTTP request latency by route",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
EVENT_LOOP_LAG = Histogram(
    "authloyalty_event_loop_lag_seconds",
    "How late the event loop woke a task sleeping a fixed interval: how long every request "
    "in flight waited for the loop then (see platform.loop_lag)",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
REGISTRATIONS = Counter("authloyalty_registrations_total", "Users registered")
LOGINS = Counter("authloyalty_logins_total", "Login attempts by outcome", ["outcome"])
LOGIN_OUTCOMES = ("success", "invalid_credentials", "throttled")
for _outcome in LOGIN_OUTCOMES:  # exported at 0 from the start: rate() sees the first failure
    LOGINS.labels(_outcome)
USERS_PURGED = Counter(
    "authloyalty_users_purged_total",
    "Deleted users whose personal data was erased after the retention window",
)
REFRESHES = Counter("authloyalty_refreshes_total", "Refresh attempts by outcome", ["outcome"])
SESSIONS_REVOKED = Counter(
    "authloyalty_sessions_revoked_total", "Sessions ended, by reason", ["reason"]
)
POINTS = Counter("authloyalty_points_total", "Points moved, by kind", ["kind"])
LEDGER_OPERATIONS = Counter(
    "authloyalty_ledger_operations_total", "Ledger operations by kind and outcome",
    ["kind", "outcome"],
)
HOLDS = Counter(
    "authloyalty_holds_total",
    "Hold requests (hold, capture, release) by outcome: success or the error code",
    ["action", "outcome"],
)
HOLD_POINTS = Counter(
    "authloyalty_hold_points_total", "Points reserved, captured and released by holds",
    ["action"],
)
BONUSES = Counter("authloyalty_welcome_bonuses_total", "Welcome bonuses credited")
EVENTS_CONSUMED = Counter(
    "authloyalty_events_consumed_total", "Events handled by the consumer, by outcome",
    ["type", "outcome"],
)
OUTBOX_PUBLISHED = Counter(
    "authloyalty_outbox_publish_total", "Outbox deliveries by outcome", ["service", "outcome"]
)
OUTBOX_DELIVERY = Histogram(
    "authloyalty_outbox_delivery_seconds",
    "From the commit that wrote an event to the broker's acknowledgement of it",
    ["service"],
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
EVENT_APPLIED = Histogram(
    "authloyalty_event_apply_seconds",
    "From the record's timestamp at the broker (when the relay produced it) to the end of "
    "the consumer's handling of it (its effect committed), by topic",
    ["topic"],
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
OUTBOX_PENDING = Gauge(
    "authloyalty_outbox_pending", "Outbox rows not yet delivered", ["service"]
)
OUTBOX_OLDEST_AGE = Gauge(
    "authloyalty_outbox_oldest_age_seconds", "Age of the oldest undelivered outbox row",
    ["service"],
)
REVOKED_SESSIONS_CACHED = Gauge(
    "authloyalty_revoked_sessions_cached", "Revoked sessions loyalty currently refuses"
)
# Labelled so that only a process holding revocations (loyalty) exports it: an unlabelled gauge
# would read 0 in sso too.
REVOCATIONS_COMPLETE = Gauge(
    "authloyalty_revocations_complete",
    "1 once this loyalty replica knows every session revocation published before it started "
    "(it authenticates nobody until then), 0 while it is still reading them",
    ["service"],
)
DEAD_LETTERS = Counter(
    "authloyalty_dead_letters_total", "Records moved to a dead-letter topic", ["topic"]
)
CONSUMER_LAG = Gauge(
    "authloyalty_consumer_lag", "Records not yet consumed, per partition",
    ["group", "topic", "partition"],
)
COALESCED_BATCH_SIZE = Histogram(
    "authloyalty_coalesced_batch_size",
    "Requests served by one database statement (see platform.batching), by operation",
    ["operation"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
COALESCED_SPLITS = Counter(
    "authloyalty_coalesced_splits_total",
    "Coalesced statements that failed and were run again as two halves, so that one request's "
    "failure reaches only that request (see platform.batching), by operation",
    ["operation"],
)
