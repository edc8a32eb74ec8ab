"""Where a registration's way to its welcome bonus went, from the services' own ``/metrics``.

Two histograms split the delay the driver measures (the registration's 201 → the first 200 of
``GET /loyalty/me``): sso's ``authloyalty_outbox_delivery_seconds`` (from the commit that wrote
the event to the broker's acknowledgement: the relay's claim, the produce, the replication that
``acks=all`` waits for) and loyalty's ``authloyalty_event_apply_seconds`` (from the record's
timestamp, set when the relay produced it, to the commit of the bonus: replication until
consumers may read it, the fetch, the handler's transaction). Both processes share the
machine's clock here, so the second is exact too.
"""

from __future__ import annotations

from typing import Any

from benchlib import promtext

BOUNDS = ("0.01", "0.025", "0.05")  # bucket bounds of both histograms, seconds
_METRICS = ("authloyalty_outbox_delivery_seconds", "authloyalty_event_apply_seconds")

Snapshot = dict[str, dict[str, float]]  # metric -> {"sum", "count", le: cumulative count}


def snapshot(sso_urls: list[str], loyalty_urls: list[str], topic: str) -> Snapshot:
    """Both histograms summed over the processes (the apply delay of ``topic`` only)."""
    totals: Snapshot = {}
    names = {f"{metric}_{part}" for metric in _METRICS for part in ("bucket", "sum", "count")}
    for (name, pairs), value in promtext.samples([*sso_urls, *loyalty_urls], names).items():
        labels = dict(pairs)
        if labels.get("topic", topic) != topic:
            continue
        metric, part = name.removeprefix("authloyalty_").rsplit("_", 1)
        key = labels["le"] if part == "bucket" else part
        series = totals.setdefault(metric, {})
        series[key] = series.get(key, 0.0) + value
    return totals


def between(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    """Per histogram: events observed in the window, their mean in ms, and how many took at
    most each of :data:`BOUNDS`."""
    out: dict[str, Any] = {}
    for metric, values in after.items():
        delta = {k: v - before.get(metric, {}).get(k, 0.0) for k, v in values.items()}
        count = int(delta.get("count", 0))
        if not count:
            continue
        out[metric] = {
            "events": count, "mean_ms": round(1000 * delta["sum"] / count, 1),
            "within_ms": {f"{float(b) * 1000:g}": int(delta.get(b, 0)) for b in BOUNDS}}
    return out
