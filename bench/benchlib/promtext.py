"""The services' ``/metrics``, read with prometheus_client's own parser and summed over processes.

Every per-measurement view of the bench (``tails``, ``coalescing``, ``eventpath``) is a
difference of two such readings, taken before and after the measurement.
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs
Samples = dict[tuple[str, Labels], float]


def samples(urls: list[str], names: set[str]) -> Samples:
    """{(sample name, labels): value summed over ``urls``} for the samples called one of
    ``names`` (histograms' ``_bucket``, ``_sum``, ``_count`` included by those names)."""
    totals: Samples = {}
    with httpx.Client(timeout=5) as client:
        for url in urls:
            text = client.get(f"{url}/metrics").text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name in names:
                        key = (sample.name, tuple(sorted(sample.labels.items())))
                        totals[key] = totals.get(key, 0.0) + sample.value
    return totals
