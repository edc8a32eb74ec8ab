"""platform.batching.Coalescer: who shares a batch, who waits, who gets which answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from authloyalty.platform.batching import Coalescer


class Recorder:
    """A ``run`` that records its batches and answers item * 10 (negative items: an error)."""

    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_with = fail_with

    async def __call__(self, items: list[int]) -> Sequence[int | BaseException]:
        self.batches.append(list(items))
        await asyncio.sleep(0)  # a round trip
        if self.fail_with is not None:
            raise self.fail_with
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


async def test_items_submitted_together_share_one_batch_and_get_their_own_answers() -> None:
    run = Recorder()
    coalescer = Coalescer("test", run)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(5)))
    assert results == [0, 10, 20, 30, 40]
    assert run.batches == [[0, 1, 2, 3, 4]]
    assert (coalescer.batches, coalescer.items) == (1, 5)


async def test_a_lone_item_runs_on_its_own_without_waiting_for_company() -> None:
    run = Recorder()
    coalescer = Coalescer("test", run)
    assert await coalescer.submit(7) == 70
    assert await coalescer.submit(8) == 80
    assert run.batches == [[7], [8]]


async def test_an_item_error_goes_to_its_caller_only() -> None:
    coalescer = Coalescer("test", Recorder())
    results = await asyncio.gather(coalescer.submit(1), coalescer.submit(-2),
                                   coalescer.submit(3), return_exceptions=True)
    assert results[0] == 10
    assert results[2] == 30
    assert isinstance(results[1], ValueError)
    assert str(results[1]) == "bad -2"


async def test_a_shared_failure_fails_every_caller_of_the_batch_without_a_retry() -> None:
    run = Recorder(fail_with=ConnectionError("down"))
    coalescer = Coalescer("test", run, shared=(ConnectionError,))
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert run.batches == [[0, 1, 2]]  # the database is down: retrying would only add load


class Poisoned:
    """A ``run`` that fails as a whole (as one SQL statement does) when any item is negative."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.applied: list[int] = []

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await asyncio.sleep(0)
        if any(i < 0 for i in items):
            raise ValueError(f"statement refused a value of {items}")
        self.applied.extend(items)
        return [i * 10 for i in items]


async def test_an_item_that_fails_the_whole_statement_fails_only_its_own_caller() -> None:
    run = Poisoned()
    coalescer = Coalescer("test", run, shared=(ConnectionError,))
    items = [1, 2, 3, 4, -5, 6, 7, 8, 9, 10, 11, 12, 13]
    results = await asyncio.gather(*(coalescer.submit(i) for i in items),
                                   return_exceptions=True)
    for item, result in zip(items, results, strict=True):
        if item < 0:
            assert isinstance(result, ValueError)
        else:
            assert result == item * 10
    assert sorted(run.applied) == sorted(i for i in items if i > 0)  # each applied once
    assert len(run.batches) <= 1 + 2 * 4  # halving: about 2·log2(n) extra statements


async def test_several_poisoned_items_and_same_key_order_survive_the_halving() -> None:
    run = Poisoned()
    coalescer = Coalescer("test", run, key=lambda i: abs(i) % 4)
    items = [-1, 2, 3, 4, 5, -6, 7, 8, 9, 10]
    results = await asyncio.gather(*(coalescer.submit(i) for i in items),
                                   return_exceptions=True)
    assert [isinstance(r, ValueError) for r in results] == [i < 0 for i in items]
    assert [r for r in results if not isinstance(r, BaseException)] == [
        i * 10 for i in items if i > 0]
    # items of one key were applied in the order they were submitted
    for key in range(4):
        same = [i for i in run.applied if abs(i) % 4 == key]
        assert same == [i for i in items if i > 0 and i % 4 == key]


async def test_a_run_that_answers_the_wrong_number_of_times_is_an_error_not_a_hang() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    coalescer = Coalescer("test", short)
    results = await asyncio.gather(coalescer.submit(1), coalescer.submit(2),
                                   return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_items_with_the_same_key_run_in_later_batches_in_submission_order() -> None:
    run = Recorder()
    coalescer = Coalescer("test", run, key=lambda i: i % 3)
    results = await asyncio.gather(*(coalescer.submit(i) for i in [0, 1, 3, 6, 2, 4]))
    assert results == [0, 10, 30, 60, 20, 40]
    # 0, 3, 6 share key 0 and 1, 4 share key 1: each batch holds a key once, order kept
    assert run.batches == [[0, 1, 2], [3, 4], [6]]


async def test_batches_are_capped_at_max_batch() -> None:
    run = Recorder()
    coalescer = Coalescer("test", run, key=lambda i: i % 2, max_batch=2)
    await asyncio.gather(*(coalescer.submit(i) for i in range(5)))
    assert run.batches == [[0, 1], [2, 3], [4]]
    unkeyed = Recorder()
    capped = Coalescer("test", unkeyed, max_batch=2)
    assert await asyncio.gather(*(capped.submit(i) for i in range(3))) == [0, 10, 20]
    assert unkeyed.batches == [[0, 1], [2]]


async def test_a_cancelled_caller_does_not_stop_its_batch() -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    done: list[list[int]] = []

    async def slow(items: list[int]) -> list[int]:
        started.set()
        await release.wait()
        done.append(items)
        return items

    coalescer = Coalescer("test", slow)
    first = asyncio.ensure_future(coalescer.submit(1))
    second = asyncio.ensure_future(coalescer.submit(2))
    await started.wait()
    first.cancel()
    release.set()
    assert await second == 2
    await coalescer.aclose()
    assert done == [[1, 2]]  # the cancelled caller's item was still applied, with its batch
    with pytest.raises(asyncio.CancelledError):
        await first


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Coalescer("test", Recorder(), max_batch=0)


async def test_a_cancelled_batch_run_cancels_its_callers_and_those_after_it() -> None:
    started = asyncio.Event()

    async def hangs(items: list[int]) -> list[int]:
        started.set()
        await asyncio.sleep(3600)
        return items

    coalescer = Coalescer("test", hangs, key=lambda i: 0)  # one key: one batch each
    callers = [asyncio.ensure_future(coalescer.submit(i)) for i in range(3)]
    await started.wait()
    for task in list(coalescer._tasks):
        task.cancel()
    results = await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), 1)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
