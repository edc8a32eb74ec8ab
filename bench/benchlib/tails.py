"""Where a measurement's slow requests spent their time, from the services' own ``/metrics``.

wrk sees a request from the moment it is written to the socket until the answer is read. The
services time it from the moment the application gets it (``authloyalty_http_request_duration_
seconds``) and record how late their event loop woke a task sleeping 0.1 s
(``authloyalty_event_loop_lag_seconds``). Summed over the processes that served the
measurement, before and after it, these tell a slow tail made inside the application (slow
requests in the server's own histogram), by a stalled loop (late wake-ups: every request in
flight waited), or outside both (neither: the time went to the kernel's queues between wrk and
the process, e.g. one process holding more connections than its share).
"""

from __future__ import annotations

from typing import Any

from benchlib import promtext

# Bucket bounds (seconds) the report asks about; each is a bucket bound of both histograms.
LOOP_LATE = (0.01, 0.05, 0.1)
REQUEST_SLOW = (0.01, 0.025, 0.1)

Snapshot = dict[str, dict[str, float]]  # series -> {le: cumulative count}


def snapshot(urls: list[str]) -> Snapshot:
    """{"loop" | "METHOD route": {le: count}}, summed over ``urls``' /metrics."""
    totals: Snapshot = {}
    found = promtext.samples(urls, {"authloyalty_event_loop_lag_seconds_bucket",
                                    "authloyalty_http_request_duration_seconds_bucket"})
    for (name, pairs), value in found.items():
        labels = dict(pairs)
        series = ("loop" if name.startswith("authloyalty_event_loop_lag")
                  else f"{labels.get('method')} {labels.get('route')}")
        buckets = totals.setdefault(series, {})
        buckets[labels["le"]] = buckets.get(labels["le"], 0.0) + value
    return totals


def _over(buckets: dict[str, float], bound: float) -> int:
    """Observations above ``bound`` seconds."""
    return int(buckets.get("+Inf", 0.0) - buckets.get(repr(bound), 0.0))


def between(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    """The window's loop wake-ups (and how many came late) and, for the route that served the
    most requests, how many the server itself timed above each bound."""
    delta: Snapshot = {
        series: {le: count - before.get(series, {}).get(le, 0.0) for le, count in buckets.items()}
        for series, buckets in after.items()}
    out: dict[str, Any] = {}
    loop = delta.get("loop")
    if loop and loop.get("+Inf"):
        out["loop_wakeups"] = int(loop["+Inf"])
        out["loop_late"] = {f"{bound * 1000:g}": _over(loop, bound) for bound in LOOP_LATE}
    routes = {series: buckets for series, buckets in delta.items() if series != "loop"}
    if routes:
        route, buckets = max(routes.items(), key=lambda item: item[1].get("+Inf", 0.0))
        if buckets.get("+Inf"):
            out["server_route"] = route
            out["server_requests"] = int(buckets["+Inf"])
            out["server_slow"] = {f"{bound * 1000:g}": _over(buckets, bound)
                                  for bound in REQUEST_SLOW}
    return out
