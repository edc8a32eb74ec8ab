"""How many requests shared a database statement during a measurement (loyalty coalesces
concurrent balance reads and movements, see ``authloyalty.platform.batching``).

Read from the services' own ``/metrics`` (``authloyalty_coalesced_batch_size`` histogram,
summed over every loyalty process) before and after a measurement.
"""

from __future__ import annotations

from typing import Any

from benchlib import promtext


def snapshot(urls: list[str]) -> dict[str, list[float]]:
    """{operation: [sum of batch sizes, number of batches]} over ``urls``' /metrics."""
    totals: dict[str, list[float]] = {}
    found = promtext.samples(urls, {"authloyalty_coalesced_batch_size_sum",
                                    "authloyalty_coalesced_batch_size_count"})
    for (name, pairs), value in found.items():
        entry = totals.setdefault(dict(pairs)["operation"], [0.0, 0.0])
        entry[0 if name.endswith("_sum") else 1] += value
    return totals


def between(before: dict[str, list[float]], after: dict[str, list[float]]
            ) -> dict[str, Any]:
    """{operation: {"statements": n, "requests": m, "mean_batch": m / n}} for the window."""
    out: dict[str, Any] = {}
    for operation, (items, batches) in after.items():
        items0, batches0 = before.get(operation, [0.0, 0.0])
        statements, requests = batches - batches0, items - items0
        if statements > 0:
            out[operation] = {"statements": int(statements), "requests": int(requests),
                              "mean_batch": round(requests / statements, 2)}
    return out
