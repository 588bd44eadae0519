"""MicroBatcher: batches concurrent submits, keeps order, bounds its queue, sorts by size."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.batching import BatchingConfig, MicroBatcher
from services.common.errors import Overloaded


class Recorder:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay_s = delay_s

    async def __call__(self, batch: list[int]) -> list[int]:
        self.batches.append(list(batch))
        await asyncio.sleep(self.delay_s)
        return [x * 10 for x in batch]


async def test_concurrent_submits_share_one_batch() -> None:
    run = Recorder()
    batcher = MicroBatcher("t", run, BatchingConfig(max_batch_size=8, max_wait_s=0.05))
    batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit([i]) for i in range(5)))
    finally:
        await batcher.stop()
    assert results == [[0], [10], [20], [30], [40]]
    assert len(run.batches) == 1 and sorted(run.batches[0]) == [0, 1, 2, 3, 4]


async def test_large_submit_is_cut_at_max_batch_size_and_sorted_by_size() -> None:
    run = Recorder()
    batcher = MicroBatcher("t", run, BatchingConfig(max_batch_size=4, max_wait_s=0.0), size_of=lambda x: x)
    batcher.start()
    try:
        items = [9, 1, 7, 3, 5, 2, 8, 0, 6, 4]
        assert await batcher.submit(items) == [x * 10 for x in items]
    finally:
        await batcher.stop()
    assert all(len(b) <= 4 for b in run.batches)
    assert [x for b in run.batches for x in b] == sorted(items)


async def test_full_queue_is_rejected_with_overloaded() -> None:
    batcher = MicroBatcher("t", Recorder(delay_s=0.2), BatchingConfig(max_batch_size=2, max_queue=4))
    batcher.start()
    try:
        first = asyncio.create_task(batcher.submit([1, 2, 3]))
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded, match="queue is full"):
            await batcher.submit([4, 5])
        assert await first == [10, 20, 30]
        assert batcher.pending == 0
        assert await batcher.submit([4, 5]) == [40, 50]  # capacity is back once the work is done
    finally:
        await batcher.stop()


async def test_batch_failure_reaches_every_caller_and_the_batcher_survives() -> None:
    calls = 0

    async def flaky(batch: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("backend fell over")
        return batch

    batcher = MicroBatcher("t", flaky, BatchingConfig(max_batch_size=8, max_wait_s=0.01))
    batcher.start()
    try:
        outcomes = await asyncio.gather(batcher.submit([1]), batcher.submit([2]), return_exceptions=True)
        assert all(isinstance(o, RuntimeError) for o in outcomes)
        assert await batcher.submit([3]) == [3]
    finally:
        await batcher.stop()


async def test_cancelled_caller_frees_its_queue_slots() -> None:
    batcher = MicroBatcher("t", Recorder(delay_s=0.1), BatchingConfig(max_batch_size=1, max_queue=3))
    batcher.start()
    try:
        task = asyncio.create_task(batcher.submit([1, 2, 3]))
        await asyncio.sleep(0.02)
        task.cancel()
        await asyncio.sleep(0.3)
        assert batcher.pending == 0
    finally:
        await batcher.stop()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(0, 100), min_size=1, max_size=20), min_size=1, max_size=8))
def test_every_caller_gets_its_own_results_in_order(requests: list[list[int]]) -> None:
    async def scenario() -> list[list[int]]:
        batcher = MicroBatcher("t", Recorder(), BatchingConfig(max_batch_size=5, max_wait_s=0.001), size_of=abs)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(r) for r in requests))
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()) == [[x * 10 for x in r] for r in requests]


async def test_size_budget_cuts_batches_by_padded_size() -> None:
    run = Recorder()
    config = BatchingConfig(max_batch_size=8, max_wait_s=0.0, max_batch_size_units=12)
    batcher = MicroBatcher("t", run, config, size_of=lambda x: x)
    batcher.start()
    try:
        items = [5, 1, 2, 20, 3, 3, 2]
        assert await batcher.submit(items) == [x * 10 for x in items]
    finally:
        await batcher.stop()
    # Sorted 1 2 2 3 3 5 20: rows times the widest stay within 12; a longer lone item still runs.
    assert run.batches == [[1, 2, 2, 3], [3, 5], [20]]


async def test_concurrent_batches_overlap_up_to_the_limit() -> None:
    running, peak = 0, 0

    async def run(batch: list[int]) -> list[int]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        return batch

    config = BatchingConfig(max_batch_size=2, max_wait_s=0.0, concurrent_batches=2)
    batcher = MicroBatcher("t", run, config)
    batcher.start()
    try:
        assert await batcher.submit(list(range(8))) == list(range(8))
    finally:
        await batcher.stop()
    assert peak == 2
