"""Starts Adapt workers for the jobs in the shared store that need one, as many at a time as
this replica allows. A worker is a separate process (``rosemesh train adapter --job ID``), so
training never runs in the serving process and outlives nothing it should not."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from services.earlyexit.core.jobs import JobState, JobStore

log = logging.getLogger(__name__)


class AdaptWorkers:
    def __init__(self, store: JobStore, models_dir: Path, slots: int, poll_s: float = 2.0) -> None:
        self.store = store
        self.models_dir = models_dir
        self.slots = slots
        self.poll_s = poll_s
        self.running: dict[str, asyncio.subprocess.Process] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="adapt-workers")

    def wake(self) -> None:
        """A job was queued: look now rather than at the next poll."""
        self._wake.set()

    async def _supervise(self) -> None:
        while True:
            try:
                await self._start_what_waits()
            except Exception:  # noqa: BLE001 - a bad job folder must not stop the supervisor
                log.exception("starting adapt workers failed; retrying")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            except TimeoutError:
                pass

    async def _start_what_waits(self) -> None:
        for job, process in list(self.running.items()):
            if process.returncode is not None:
                del self.running[job]
        for record in await asyncio.to_thread(self.store.runnable):
            if len(self.running) >= self.slots:
                return
            if record.id in self.running or not await asyncio.to_thread(self.store.claim, record.id):
                continue
            env = os.environ | {
                "ROSEMESH_EARLYEXIT_MODELS_DIR": str(self.models_dir),
                "ROSEMESH_ADAPT_HEARTBEAT_TIMEOUT_S": str(self.store.heartbeat_timeout_s),
            }
            # Its summary line goes nowhere: the job record says how it ended, and a service's
            # stdout may be a bench's JSON.
            self.running[record.id] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.cli", "train", "adapter", "--job", record.id,
                env=env, stdout=asyncio.subprocess.DEVNULL,
            )
            log.info("started a worker for %s (%s, attempt %d)", record.id, record.state.value, record.attempts + 1)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Hand running jobs back to the queue: each worker, sent SIGTERM, re-queues its job."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for process in self.running.values():
            if process.returncode is None:
                process.terminate()
        for job, process in self.running.items():
            try:
                await asyncio.wait_for(process.wait(), timeout_s)
            except TimeoutError:
                process.kill()
                await process.wait()
                record = self.store.get(job)
                if record.state is JobState.RUNNING:
                    record.state, record.stage = JobState.QUEUED, "interrupted; waiting for a worker"
                    self.store.save(record)
                self.store.release(job)
        self.running.clear()
