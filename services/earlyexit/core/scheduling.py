"""Deadline- and cost-aware batching of tenants' rows: CaraServe's rank-aware scheduling here.

A padded batch costs what its longest row, its highest LoRA rank and its longest prompt make
every row cost, and a running batch cannot be pre-empted. So the scheduler predicts each batch's
time from a cost model measured on this machine at start, takes rows earliest deadline first,
adds a row only when the batch still finishes before every member's deadline and the row does
not inflate the batch's padded shape much beyond what it would cost in a batch of its own, and
keeps any one batch short enough that a tight-deadline arrival is not stuck behind it. Each
batch's measured time corrects the predictions as it runs (a busy neighbour slows every batch).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import scipy.optimize
from prometheus_client import Gauge

from services.common.batching import BatchLoop

CORRECTION = Gauge(
    "rosemesh_scheduler_cost_correction", "Measured batch time over the start-time cost model's prediction.", ["scheduler"]
)
from services.common.errors import Overloaded

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class Shape:
    """What a padded batch costs per row: its longest text, highest LoRA rank, longest prompt."""

    tokens: int
    rank: int = 0
    prompt: int = 0

    def union(self, other: Shape) -> Shape:
        return Shape(max(self.tokens, other.tokens), max(self.rank, other.rank), max(self.prompt, other.prompt))


class CostModel:
    """Seconds a batch of ``rows`` rows padded to ``shape`` takes: a least-squares fit on the
    terms its work grows with (positions, attention's square, the LoRA rank's extra products)."""

    def __init__(self, coefficients: np.ndarray) -> None:
        self.coefficients = coefficients

    @staticmethod
    def terms(rows: int, shape: Shape) -> np.ndarray:
        positions = shape.tokens + shape.prompt
        return np.array([1.0, rows * positions, rows * positions**2, rows * positions * shape.rank])

    def seconds(self, rows: int, shape: Shape) -> float:
        return float(self.terms(rows, shape) @ self.coefficients)

    @classmethod
    def fit(cls, measured: Sequence[tuple[int, Shape, float]]) -> CostModel:
        terms = np.stack([cls.terms(rows, shape) for rows, shape, _ in measured])
        seconds = np.array([s for _, _, s in measured])
        # Non-negative: a negative term would promise free work. Scaled columns keep it well conditioned.
        scale = np.abs(terms).max(axis=0)
        scale[scale == 0] = 1.0
        coefficients, _ = scipy.optimize.nnls(terms / scale, seconds)
        return cls(coefficients / scale)

    def describe(self) -> dict[str, float]:
        names = ("fixed_s", "per_position_s", "per_position_squared_s", "per_position_rank_s")
        return dict(zip(names, (float(c) for c in self.coefficients), strict=True))


@dataclass(frozen=True)
class SchedulingConfig:
    max_batch_size: int = 32
    max_queue: int = 2048
    #: A row may raise the batch's cost by at most this much more than it would add to a batch of
    #: its own shape: mixing a short, low-rank row into a long, high-rank batch wastes its padding.
    padding_tolerance: float = 1.25
    #: No batch is predicted to run longer than this share of the tightest deadline seen lately.
    batch_share_of_tightest_deadline: float = 0.4
    #: The deadline of a request that states none.
    default_deadline_s: float = 5.0
    #: How fast the measured-over-predicted correction follows the latest batches.
    correction_rate: float = 0.2


@dataclass(eq=False)
class _Waiting(Generic[ItemT, ResultT]):
    item: ItemT
    shape: Shape
    deadline: float
    order: int
    future: asyncio.Future[ResultT]


class DeadlineBatcher(BatchLoop[ItemT, ResultT]):
    """Rows queued with deadlines; batches formed by the cost model, earliest deadline first."""

    def __init__(
        self,
        name: str,
        run_batch: Callable[[list[ItemT]], Awaitable[Sequence[ResultT]]],
        shape_of: Callable[[ItemT], Shape],
        cost: CostModel,
        config: SchedulingConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name, run_batch)
        self.cost = cost
        self.config = config
        self._shape_of = shape_of
        self._clock = clock
        self._waiting: list[_Waiting[ItemT, ResultT]] = []
        self._arrived = asyncio.Event()
        self._order = itertools.count()
        self._tightest: list[float] = []  # relative deadlines of the latest requests
        #: Measured batch time over predicted, smoothed: the start-time cost model as it holds now.
        self.correction = 1.0

    def seconds(self, rows: int, shape: Shape) -> float:
        """A batch's predicted time on this machine as it runs now."""
        return self.correction * self.cost.seconds(rows, shape)

    @property
    def pending(self) -> int:
        return len(self._waiting)

    async def submit(self, items: Sequence[ItemT], deadline_s: float | None = None) -> list[ResultT]:
        """Queue ``items``, due within ``deadline_s`` seconds, and wait for their results in order."""
        self._check_started()
        if len(self._waiting) + len(items) > self.config.max_queue:
            raise Overloaded(
                f"{self.name} queue is full ({len(self._waiting)} of {self.config.max_queue} items waiting, "
                f"{len(items)} more requested); retry with backoff"
            )
        relative = deadline_s if deadline_s is not None and deadline_s > 0 else self.config.default_deadline_s
        self._tightest = [*self._tightest[-255:], relative]
        loop = asyncio.get_running_loop()
        due = self._clock() + relative
        waiting = [_Waiting(item, self._shape_of(item), due, next(self._order), loop.create_future()) for item in items]
        self._waiting.extend(waiting)
        self._arrived.set()
        try:
            return list(await asyncio.gather(*(w.future for w in waiting)))
        finally:
            for entry in waiting:
                entry.future.cancel()  # no-op once done; a cancelled caller's rows are dropped

    def next_batch(self) -> list[_Waiting[ItemT, ResultT]]:
        """Take the next batch off the queue (the scheduling decision, synchronous and testable)."""
        self._waiting = [w for w in self._waiting if not w.future.done()]
        if not self._waiting:
            return []
        now = self._clock()
        by_deadline = sorted(self._waiting, key=lambda w: (w.deadline, w.order))
        # A row that cannot finish in time even alone goes last: serving it first would make
        # the rows behind it late too.
        on_time = [w for w in by_deadline if now + self.seconds(1, w.shape) <= w.deadline]
        late = [w for w in by_deadline if now + self.seconds(1, w.shape) > w.deadline]
        candidates = on_time + late
        head = candidates[0]
        batch, shape = [head], head.shape
        cap = self.config.batch_share_of_tightest_deadline * min(self._tightest, default=self.config.default_deadline_s)
        finish_by = head.deadline
        for entry in candidates[1:]:
            if len(batch) == self.config.max_batch_size:
                break
            widened = shape.union(entry.shape)
            before, after = self.seconds(len(batch), shape), self.seconds(len(batch) + 1, widened)
            own = self.seconds(len(batch) + 1, entry.shape) - self.seconds(len(batch), entry.shape)
            if after - before > self.config.padding_tolerance * max(own, 1e-9):
                continue
            if head in on_time and now + after > min(finish_by, entry.deadline):
                continue
            if after > cap:
                continue
            batch.append(entry)
            shape, finish_by = widened, min(finish_by, entry.deadline)
        taken = set(map(id, batch))
        self._waiting = [w for w in self._waiting if id(w) not in taken]
        return batch

    async def _work(self) -> None:
        while True:
            if not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            await asyncio.sleep(0)  # let rows that arrived together join
            batch = self.next_batch()
            if batch:
                await self._run(batch)

    def _learn(self, batch: list[_Waiting[ItemT, ResultT]], seconds: float) -> None:
        shape = batch[0].shape
        for entry in batch[1:]:
            shape = shape.union(entry.shape)
        predicted = self.cost.seconds(len(batch), shape)
        if predicted > 0:
            ratio = min(max(seconds / predicted, 0.25), 8.0)
            self.correction += self.config.correction_rate * (ratio - self.correction)
            CORRECTION.labels(self.name).set(self.correction)

    async def _run(self, batch: list[_Waiting[ItemT, ResultT]]) -> None:
        began = self._clock()
        await self._deliver([entry.item for entry in batch], [entry.future for entry in batch])
        self._learn(batch, self._clock() - began)
