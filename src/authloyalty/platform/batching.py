"""Coalescing: requests that arrive in the same event-loop turn share one database statement.

A server under load reads several requests from its sockets in one turn of the event loop.
When each of them then sends its own query, every query pays the full fixed cost of a round
trip (a pooled connection, a protocol exchange, a wake-up) on the service's CPU and on the
database's. A :class:`Coalescer` collects what is submitted during one turn and hands it to
one ``run`` call at the start of the next, the way group commit amortises a disk flush:

* no added wait: a lone request runs in the very next turn, as it would have anyway;
* all or nothing per batch: ``run`` is expected to be one statement (one transaction), so when
  it raises, none of the batch was applied;
* per-item answers: ``run`` returns one result per item, in order; an exception in that list
  is raised to that item's caller only (an unknown account, a refused withdrawal, ...);
* items with the same :func:`key` never share a batch: they run in later batches, in the
  order they were submitted (two withdrawals from one account stay two ordered statements).

**Isolation guarantee: nothing one request carries can fail another.** When ``run`` raises
for a batch of several items, the batch is split in halves and each half runs again, down to
single items, so only the item(s) that make the statement fail get its exception and every
other item gets the answer it would have had alone (the statement being all or nothing, the
failed attempt applied nothing). Only failures listed as ``shared`` (the database is
unreachable or overloaded: retrying at once would fail again and double the load) fail the
whole batch without a retry. A poisoned item among n costs about 2·log2(n) extra statements;
k of them at most k·2·log2(n). Items with one key still run in submission order: a batch
finishes, halves and all, before the next batch starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from authloyalty.platform import metrics

I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")  # its result

Run = Callable[[list[I]], Awaitable[Sequence[R | BaseException]]]


class Coalescer(Generic[I, R]):
    """Runs the items submitted during one event-loop turn as batches of ``run``."""

    def __init__(self, name: str, run: Run[I, R], *,
                 key: Callable[[I], Hashable] | None = None, max_batch: int = 256,
                 shared: tuple[type[BaseException], ...] = ()) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._size = metrics.COALESCED_BATCH_SIZE.labels(name)
        self._split_runs = metrics.COALESCED_SPLITS.labels(name)
        self._run = run
        self._shared = shared
        self._key = key
        self._max_batch = max_batch
        self._pending: list[tuple[I, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # how many batches ran, and how many items they held
        self.items = 0

    async def submit(self, item: I) -> R:
        """The result of ``item`` once its batch has run (or its exception)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((item, future))
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        # A task of its own: the batch runs to its end even if a caller is cancelled, so that
        # no caller sees half of a batch and every future gets its answer.
        task = asyncio.ensure_future(self._run_batches(self._split(pending)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _split(self, pending: list[tuple[I, asyncio.Future[R]]]
               ) -> list[list[tuple[I, asyncio.Future[R]]]]:
        """Batches of at most ``max_batch`` items, no two with the same key, order kept."""
        batches: list[list[tuple[I, asyncio.Future[R]]]] = []
        if self._key is None:
            for start in range(0, len(pending), self._max_batch):
                batches.append(pending[start:start + self._max_batch])
            return batches
        seen: dict[Hashable, int] = {}
        for entry in pending:
            k = self._key(entry[0])
            index = seen.get(k, -1) + 1
            while index < len(batches) and len(batches[index]) >= self._max_batch:
                index += 1
            if index == len(batches):
                batches.append([])
            batches[index].append(entry)
            seen[k] = index
        return batches

    async def _run_batches(self, batches: list[list[tuple[I, asyncio.Future[R]]]]) -> None:
        for number, batch in enumerate(batches):
            self.batches += 1
            self.items += len(batch)
            self._size.observe(len(batch))
            try:
                await self._run_isolated(batch)
            except BaseException:  # cancelled (shutdown): no caller may wait forever
                for _, future in (entry for rest in batches[number:] for entry in rest):
                    if not future.done():
                        future.cancel()
                raise

    async def _run_isolated(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        """Run ``batch``; if it fails for a reason not ``shared``, run its halves again."""
        try:
            results = await self._run([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} answered {len(results)} times")
        except Exception as exc:
            if len(batch) > 1 and not isinstance(exc, self._shared):
                self._split_runs.inc()
                middle = len(batch) // 2
                await self._run_isolated(batch[:middle])
                await self._run_isolated(batch[middle:])
                return
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller was cancelled; the work is done regardless
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def aclose(self) -> None:
        """Wait for the batches under way."""
        while self._pending or self._tasks:
            if self._pending:
                await asyncio.sleep(0)
                continue
            await asyncio.gather(*self._tasks, return_exceptions=True)
