"""Dynamic micro-batching: concurrent requests that arrive within a short window run as one batch.

The queue is bounded in items; a submit that would overflow it raises ``Overloaded`` at once
rather than letting latency grow without limit. When more than one batch is waiting, the
waiting items are sorted by size before they are cut into batches, which cuts padding.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import Histogram

from services.common.errors import Overloaded

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

log = logging.getLogger(__name__)

BATCH_SIZE = Histogram(
    "rosemesh_batch_size",
    "Items per batch run by a micro-batcher.",
    ["batcher"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 32
    max_wait_s: float = 0.002
    max_queue: int = 2048
    #: How many batches' worth of waiting items are sorted together.
    sort_window_batches: int = 16
    #: Padded size (longest item's size times rows) a batch may reach, 0 for no limit. Short
    #: batches of like-sized items stay in cache; measured for MiniLM in `rosemesh bench embedding`.
    max_batch_size_units: int = 0
    #: Batches run at once: above 1 for a runtime with that many independent streams, each on
    #: its own cores, so that one batch's tail does not leave the others idle.
    concurrent_batches: int = 1


class BatchLoop(Generic[ItemT, ResultT]):
    """A background task that takes batches off a queue and runs them, one at a time."""

    def __init__(self, name: str, run_batch: Callable[[list[ItemT]], Awaitable[Sequence[ResultT]]]) -> None:
        self.name = name
        self._run_batch = run_batch
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._worker = asyncio.create_task(self._work(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None

    def _check_started(self) -> None:
        if self._worker is None:
            raise RuntimeError(f"batcher {self.name} is not started")

    async def _work(self) -> None:
        raise NotImplementedError

    async def _deliver(self, items: list[ItemT], futures: list[asyncio.Future[ResultT]]) -> None:
        """Run one batch; each caller still waiting gets its result, or the batch's error."""
        BATCH_SIZE.labels(self.name).observe(len(items))
        try:
            results = await self._run_batch(items)
        except Exception as exc:  # noqa: BLE001 - the callers get the error
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
        else:
            for future, result in zip(futures, results, strict=True):
                if not future.done():
                    future.set_result(result)


class MicroBatcher(BatchLoop[ItemT, ResultT]):
    def __init__(
        self,
        name: str,
        run_batch: Callable[[list[ItemT]], Awaitable[Sequence[ResultT]]],
        config: BatchingConfig,
        size_of: Callable[[ItemT], int] | None = None,
    ) -> None:
        super().__init__(name, run_batch)
        self.config = config
        self._size_of = size_of
        self._queue: asyncio.Queue[tuple[ItemT, asyncio.Future[ResultT]]] = asyncio.Queue()
        self._pending = 0

    @property
    def pending(self) -> int:
        """Items queued or running."""
        return self._pending

    async def submit(self, items: Sequence[ItemT]) -> list[ResultT]:
        """Queue ``items`` and wait for their results, in order."""
        self._check_started()
        if self._pending + len(items) > self.config.max_queue:
            raise Overloaded(
                f"{self.name} queue is full ({self._pending} of {self.config.max_queue} items waiting, "
                f"{len(items)} more requested); retry with backoff"
            )
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self._pending += len(items)
        for item, future in zip(items, futures, strict=True):
            self._queue.put_nowait((item, future))
        try:
            return list(await asyncio.gather(*futures))
        finally:
            for future in futures:
                future.cancel()  # no-op once done; frees a cancelled caller's queued items

    async def _collect(self) -> list[tuple[ItemT, asyncio.Future[ResultT]]]:
        """Wait for work, give stragglers a short window, then take what is ready."""
        loop = asyncio.get_running_loop()
        taken = [await self._queue.get()]
        deadline = loop.time() + self.config.max_wait_s
        while len(taken) < self.config.max_batch_size:
            if not self._queue.empty():
                taken.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                taken.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        window = self.config.max_batch_size * self.config.sort_window_batches
        while len(taken) < window and not self._queue.empty():
            taken.append(self._queue.get_nowait())
        return taken

    async def _work(self) -> None:
        slots = asyncio.Semaphore(self.config.concurrent_batches)
        running: set[asyncio.Task[None]] = set()

        async def run_in_slot(batch: list[tuple[ItemT, asyncio.Future[ResultT]]]) -> None:
            try:
                await self._run(batch)
            finally:
                slots.release()

        try:
            while True:
                taken = await self._collect()
                live = [(item, future) for item, future in taken if not future.done()]
                self._pending -= len(taken) - len(live)
                if self._size_of is not None:
                    live.sort(key=lambda pair: self._size_of(pair[0]))  # type: ignore[misc]
                for batch in self._cut(live):
                    await slots.acquire()
                    task = asyncio.create_task(run_in_slot(batch))
                    running.add(task)
                    task.add_done_callback(running.discard)
        finally:
            for task in running:
                task.cancel()

    def _cut(self, live: list[tuple[ItemT, asyncio.Future[ResultT]]]) -> list[list[tuple[ItemT, asyncio.Future[ResultT]]]]:
        """Cut sorted items into batches of at most max_batch_size rows and, with a size
        function, at most max_batch_size_units padded units (a longer lone item still runs)."""
        budget = self.config.max_batch_size_units if self._size_of is not None else 0
        batches: list[list[tuple[ItemT, asyncio.Future[ResultT]]]] = []
        current: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        widest = 0
        for pair in live:
            size = self._size_of(pair[0]) if budget else 0  # type: ignore[misc]
            width = max(widest, size)
            over_budget = budget and width * (len(current) + 1) > budget
            if current and (len(current) == self.config.max_batch_size or over_budget):
                batches.append(current)
                current, width = [], size
            current.append(pair)
            widest = width
        if current:
            batches.append(current)
        return batches

    async def _run(self, batch: list[tuple[ItemT, asyncio.Future[ResultT]]]) -> None:
        try:
            await self._deliver([item for item, _ in batch], [future for _, future in batch])
        finally:
            self._pending -= len(batch)
