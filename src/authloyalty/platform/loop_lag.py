"""Event-loop lag: how late a periodic wake-up of the loop comes.

Every request of a process runs on its one event loop, so whatever holds the loop (a blocking
call, a long collection of garbage, a thread holding the GIL) delays every request in flight by
as much. A task sleeping a fixed interval and timing its own wake-up sees that delay directly:
``authloyalty_event_loop_lag_seconds`` is where a latency spike that the request timings cannot
explain shows up (docs/performance.md, "Event-loop lag").
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from authloyalty.platform import metrics

# Ten wake-ups a second: a few microseconds of CPU each, and a stall of more than 0.1 s is
# seen whole (a shorter one may start mid-sleep, and is then seen in part).
LOOP_LAG_INTERVAL_SECONDS = 0.1


async def watch_loop_lag(services: Sequence[str],
                         interval: float = LOOP_LAG_INTERVAL_SECONDS) -> None:
    """Observe, forever, how late each wake-up after ``interval`` comes, under each of
    ``services`` (the embedded mode serves both services from one loop)."""
    loop = asyncio.get_running_loop()
    histograms = [metrics.EVENT_LOOP_LAG.labels(service) for service in services]
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        # The loop's timers may fire up to a clock tick early (uvloop counts milliseconds).
        lag = max(0.0, loop.time() - due)
        for histogram in histograms:
            histogram.observe(lag)
