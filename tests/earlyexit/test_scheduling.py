"""The tenant scheduler's decisions and the fast paths' life cycle, as logic (no backbone)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from services.earlyexit.core.scheduling import CostModel, DeadlineBatcher, SchedulingConfig, Shape
from services.earlyexit.core.tenants import RECENT_TENANTS_KEPT, FastPathConfig, FastPaths

#: 1 ms a batch, 10 µs a position, 0.2 µs a position-rank (the attention term left out).
COSTS = CostModel(np.array([1e-3, 1e-5, 0.0, 2e-7]))


@dataclass(frozen=True)
class Row:
    name: str
    shape: Shape


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


async def _queued(batcher: DeadlineBatcher, rows: list[tuple[Row, float]]) -> list[asyncio.Task]:
    """Submit each row with its deadline (the worker is not started: decisions are called by hand)."""
    batcher._worker = asyncio.current_task()  # accept submissions without a worker running
    tasks = [asyncio.create_task(batcher.submit([row], deadline)) for row, deadline in rows]
    await asyncio.sleep(0)
    return tasks


def _batcher(clock: Clock, **config) -> DeadlineBatcher:
    async def never(rows):
        raise AssertionError("not run here")

    return DeadlineBatcher("test", never, lambda row: row.shape, COSTS, SchedulingConfig(**config), clock)


async def test_short_low_rank_rows_are_not_padded_into_a_long_high_rank_batch() -> None:
    clock = Clock()
    batcher = _batcher(clock)
    long_rows = [(Row(f"long{i}", Shape(128, 64)), 2.0) for i in range(4)]
    short_rows = [(Row(f"short{i}", Shape(12, 8)), 0.3) for i in range(6)]
    tasks = await _queued(batcher, long_rows[:2] + short_rows + long_rows[2:])
    first = [entry.item.name for entry in batcher.next_batch()]
    second = [entry.item.name for entry in batcher.next_batch()]
    assert first == [f"short{i}" for i in range(6)]  # the tight ones first, and only they
    assert second == [f"long{i}" for i in range(4)]
    assert batcher.next_batch() == []
    for task in tasks:
        task.cancel()


async def test_a_row_that_cannot_make_its_deadline_waits_behind_the_ones_that_can() -> None:
    clock = Clock()
    batcher = _batcher(clock, max_batch_size=1)
    hopeless = Row("hopeless", Shape(128, 64))  # 1 + 1.28 + 1.64 ms alone: more than its 2 ms
    tasks = await _queued(batcher, [(hopeless, 0.002), (Row("fine", Shape(16, 8)), 0.010)])
    assert [entry.item.name for entry in batcher.next_batch()] == ["fine"]
    assert [entry.item.name for entry in batcher.next_batch()] == ["hopeless"]
    for task in tasks:
        task.cancel()


async def test_a_batch_stops_growing_before_it_would_miss_its_earliest_deadline() -> None:
    clock = Clock()
    batcher = _batcher(clock, batch_share_of_tightest_deadline=1.0)
    # Each 64-token row adds 0.64 ms to 1 ms fixed: 8 rows take 6.12 ms, a 9th would need 6.76.
    tasks = await _queued(batcher, [(Row(str(i), Shape(64)), 0.0065) for i in range(20)])
    batch = batcher.next_batch()
    assert len(batch) == 8
    assert COSTS.seconds(len(batch), Shape(64)) <= 0.0065 < COSTS.seconds(len(batch) + 1, Shape(64))
    for task in tasks:
        task.cancel()


async def test_cancelled_requests_leave_the_queue() -> None:
    clock = Clock()
    batcher = _batcher(clock)
    tasks = await _queued(batcher, [(Row("gone", Shape(16)), 1.0), (Row("kept", Shape(16)), 1.0)])
    tasks[0].cancel()
    await asyncio.sleep(0)
    assert [entry.item.name for entry in batcher.next_batch()] == ["kept"]
    tasks[1].cancel()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 32), st.integers(4, 128), st.sampled_from([0, 8, 32, 64])), min_size=6, max_size=20))
def test_the_cost_model_recovers_costs_that_follow_its_terms(batches: list[tuple[int, int, int]]) -> None:
    truth = CostModel(np.array([2e-3, 3e-5, 1e-8, 4e-8]))
    measured = [(rows, Shape(tokens, rank), truth.seconds(rows, Shape(tokens, rank))) for rows, tokens, rank in batches]
    fitted = CostModel.fit(measured)
    for rows, shape, seconds in measured:
        assert abs(fitted.seconds(rows, shape) - seconds) <= 1e-6 + 1e-3 * seconds


@dataclass(frozen=True)
class _Manifest:
    tenant: str
    task: str = "task"
    version: str = "v1"


@dataclass(frozen=True)
class _Adapter:
    manifest: _Manifest
    rank: int = 8


async def test_a_hot_tenant_is_served_at_once_and_switched_to_its_fast_path_when_ready() -> None:
    release = asyncio.Event()
    clock = Clock()

    async def prepare(adapter: _Adapter) -> str:
        await release.wait()
        return f"merged {adapter.manifest.tenant}"

    paths = FastPaths(FastPathConfig(tenants=1, hot_after=2, hot_window_s=10), prepare, clock)
    acme, globex = _Adapter(_Manifest("acme")), _Adapter(_Manifest("globex"))
    await asyncio.wait_for(paths.note_request(acme), 1)  # cold: not hot yet
    await asyncio.wait_for(paths.note_request(acme), 1)  # hot: preparing, the request is not held
    assert paths.ready(acme) is None
    release.set()
    await _settle()
    assert paths.ready(acme) == "merged acme"
    clock.now += 5
    await paths.note_request(acme)
    for _ in range(3):
        await paths.note_request(globex)
    await _settle()
    assert paths.ready(globex) is None  # acme is still hot: no taking turns
    clock.now += 11
    for _ in range(2):
        await paths.note_request(globex)
    await _settle()
    assert paths.ready(globex) == "merged globex" and paths.ready(acme) is None  # acme idle: out
    assert await asyncio.wait_for(paths.note_request(_Adapter(_Manifest("lpt"), rank=0)), 1) is None


async def test_request_counts_of_idle_tenants_are_forgotten() -> None:
    clock = Clock()

    async def prepare(adapter: _Adapter) -> str:
        return "merged"

    paths = FastPaths(FastPathConfig(tenants=1, hot_after=3, hot_window_s=10), prepare, clock)
    for index in range(RECENT_TENANTS_KEPT):
        await paths.note_request(_Adapter(_Manifest(f"tenant{index}")))
    clock.now += 11  # all of them idle past the window
    await paths.note_request(_Adapter(_Manifest("busy")))
    await paths.note_request(_Adapter(_Manifest("busy")))
    assert len(paths._recent) == 1  # only the busy tenant's count is left
    await paths.note_request(_Adapter(_Manifest("busy")))
    await _settle()
    assert paths.ready(_Adapter(_Manifest("busy"))) == "merged"  # and it still turns hot


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_load_then_serve_holds_a_cold_tenants_request_until_its_fast_path_is_ready() -> None:
    release = asyncio.Event()

    async def prepare(adapter: _Adapter) -> str:
        await release.wait()
        return "merged"

    paths = FastPaths(FastPathConfig(tenants=1, hot_after=1, wait=True), prepare)
    held = asyncio.create_task(paths.note_request(_Adapter(_Manifest("acme"))))
    await asyncio.sleep(0.01)
    assert not held.done()
    release.set()
    await asyncio.wait_for(held, 1)
    assert paths.ready(_Adapter(_Manifest("acme"))) == "merged"


async def test_measured_batch_times_correct_the_cost_model_as_it_runs() -> None:
    clock = Clock()

    async def twice_as_slow(rows: list[Row]) -> list[str]:
        clock.now += 2 * COSTS.seconds(len(rows), Shape(16))
        return [row.name for row in rows]

    batcher = DeadlineBatcher("test", twice_as_slow, lambda row: row.shape, COSTS, SchedulingConfig(), clock)
    batcher.start()
    try:
        for index in range(20):
            assert await batcher.submit([Row(str(index), Shape(16))], 1.0) == [str(index)]
    finally:
        await batcher.stop()
    assert abs(batcher.correction - 2.0) < 0.05
    assert abs(batcher.seconds(4, Shape(16)) - 2 * COSTS.seconds(4, Shape(16))) < 1e-4
