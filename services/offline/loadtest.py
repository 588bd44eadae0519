"""`rosemesh bench load`: the running mesh under a concurrency sweep of async clients, through faults.

The mesh runs on 127.0.0.1 as real processes: embedding, experience (over the embedded Qdrant
engine in a scratch data directory) and, where the wheel's tritonserver runs here, earlyexit on
the Triton backend. For each concurrency level every scenario drives load while it breaks a
backend and brings it back:

- ``embedding_kill``: Record and Orchestrate on the experience service while the embedding
  service under it is SIGKILLed and restarted on the same port;
- ``experience_kill``: a burst of concurrent Record calls while the experience service itself is
  SIGKILLed and restarted on the same data directory and port; every acknowledged write is then
  read back with Get;
- ``triton_stop``: Classify on earlyexit while Triton is stopped and started again;
- ``slow_embedding``: Record and Orchestrate with a short deadline while the embedding process is
  frozen (SIGSTOP) for a while and then resumed (SIGCONT).

Each scenario reports requests sent, succeeded and failed by status code, acknowledged writes
lost (read back with Get after the scenario), the seconds from the backend's return to the first
success (``recovery_s``; a restart counts as returned once it serves) and from the fault to that
success (``outage_s``, restart included), latency percentiles of the successes, and the slowest
failure (how fast a broken backend answers).
The load clients make one attempt per call with a breaker that never opens, so the status codes
counted are the services' own answers.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from rich.console import Console

from services.adapters.tritonserver import TritonServer, triton_unavailable_reason
from services.common.breaker import CircuitBreaker
from services.common.net import free_port
from services.earlyexit.client import EarlyExitClient
from services.experience.client import ExperienceClient
from services.supervisor import RunningService, spawn_service, stop_all

TENANT = "loadtest"
EARLYEXIT_MODEL = "rotten_tomatoes"
#: An operation of the load: (worker, sequence number) → the id of an acknowledged write, or None.
Operation = Callable[[int, int], Awaitable[str | None]]
console = Console(stderr=True)


@dataclass(frozen=True)
class LoadConfig:
    concurrency: Sequence[int] = (1, 8, 32)
    before_s: float = 3.0  # load before the fault
    fault_s: float = 4.0  # how long the backend stays dead or frozen
    after_s: float = 3.0  # load after the first success once the backend is back
    recovery_timeout_s: float = 60.0
    timeout_s: float = 5.0  # per-call deadline
    slow_timeout_s: float = 1.0  # per-call deadline in the slow-backend scenario


@dataclass
class Tally:
    """What the clients saw during one scenario."""

    latencies_ms: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    acknowledged: list[str] = field(default_factory=list)
    max_failed_ms: float = 0.0
    broken_at: float | None = None  # when the fault began
    returned_at: float | None = None  # when the broken backend was back
    recovered_at: float | None = None  # the first success after that

    def note(self, code: str, started: float, ended: float) -> None:
        self.codes[code] += 1
        elapsed_ms = (ended - started) * 1000
        if code == "OK":
            self.latencies_ms.append(elapsed_ms)
            if self.returned_at is not None and self.recovered_at is None and ended >= self.returned_at:
                self.recovered_at = ended
        else:
            self.max_failed_ms = max(self.max_failed_ms, elapsed_ms)

    def report(self, scenario: str, concurrency: int, lost: int | None) -> dict:
        sent = sum(self.codes.values())
        recovery = outage = None
        if self.returned_at is not None and self.recovered_at is not None:
            recovery = round(self.recovered_at - self.returned_at, 3)
        if self.broken_at is not None and self.recovered_at is not None:
            outage = round(self.recovered_at - self.broken_at, 3)
        latencies = np.asarray(self.latencies_ms or [float("nan")])
        return {
            "scenario": scenario,
            "concurrency": concurrency,
            "sent": sent,
            "succeeded": self.codes["OK"],
            "failed": {code: n for code, n in sorted(self.codes.items()) if code != "OK"},
            "acknowledged_writes": len(self.acknowledged),
            "lost_acknowledged_writes": lost,
            "recovery_s": recovery,
            "outage_s": outage,
            "p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "p99_ms": round(float(np.percentile(latencies, 99)), 2),
            "max_failed_ms": round(self.max_failed_ms, 2),
        }


async def drive(operation: Operation, concurrency: int, tally: Tally, stop: asyncio.Event) -> None:
    """``concurrency`` workers call ``operation`` back to back until ``stop`` is set."""

    async def worker(index: int) -> None:
        sequence = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                acknowledged = await operation(index, sequence)
                code = "OK"
            except grpc.aio.AioRpcError as exc:
                acknowledged, code = None, exc.code().name
            tally.note(code, started, time.monotonic())
            if acknowledged is not None:
                tally.acknowledged.append(acknowledged)
            if code != "OK":
                await asyncio.sleep(0.05)  # a real client backs off a little too
            sequence += 1

    await asyncio.gather(*(worker(i) for i in range(concurrency)))


async def under_fault(
    operation: Operation,
    concurrency: int,
    config: LoadConfig,
    break_backend: Callable[[], None],
    restore_backend: Callable[[], None],
) -> Tally:
    """Load before the fault, during it, and until ``after_s`` past the first success after it."""
    tally, stop = Tally(), asyncio.Event()
    load = asyncio.create_task(drive(operation, concurrency, tally, stop))
    try:
        await asyncio.sleep(config.before_s)
        tally.broken_at = time.monotonic()
        break_backend()
        await asyncio.sleep(config.fault_s)
        await asyncio.to_thread(restore_backend)  # restarts block until the backend serves
        tally.returned_at = time.monotonic()
        deadline = tally.returned_at + config.recovery_timeout_s
        while tally.recovered_at is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(config.after_s)
    finally:
        stop.set()
        await load
    return tally


async def lost_writes(address: str, acknowledged: Sequence[str]) -> int:
    """How many acknowledged experiences Get no longer finds."""
    async with ExperienceClient(address, TENANT, timeout_s=30, max_attempts=8) as pool:
        semaphore = asyncio.Semaphore(16)

        async def missing(experience_id: str) -> bool:
            async with semaphore:
                try:
                    await pool.get(experience_id)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.NOT_FOUND:
                        return True
                    raise
                return False

        return sum(await asyncio.gather(*(missing(i) for i in acknowledged)))


class Restartable:
    """A service on fixed 127.0.0.1 ports, so that it comes back where its callers look for it."""

    def __init__(self, name: str, flags: Sequence[str]) -> None:
        self.name = name
        ports = ["--host", "127.0.0.1", "--port", str(free_port()), "--metrics-port", str(free_port())]
        self.flags = [*ports, *flags]
        self.service: RunningService | None = None

    @property
    def address(self) -> str:
        assert self.service is not None
        return self.service.address

    def start(self) -> None:
        self.service = spawn_service(self.name, self.flags)

    def signal(self, signum: signal.Signals) -> None:
        assert self.service is not None
        self.service.process.send_signal(signum)
        if signum == signal.SIGKILL:
            self.service.process.wait()

    def stop(self) -> None:
        if self.service is not None:
            self.service.process.send_signal(signal.SIGCONT)  # in case it was left frozen
            stop_all([self.service])


@contextmanager
def running(service: Restartable) -> Iterator[Restartable]:
    service.start()
    try:
        yield service
    finally:
        service.stop()


def _experience_ops(pool: ExperienceClient, run: str) -> tuple[Operation, Operation]:
    async def record(worker: int, sequence: int) -> str:
        question = f"{run}: worker {worker} asks question {sequence}: what is {worker} plus {sequence}?"
        paths = [(f"{worker} plus {sequence}\nis {worker + sequence}", str(worker + sequence))]
        return (await pool.record(question, paths)).experience.id

    async def mixed(worker: int, sequence: int) -> str | None:
        if sequence % 2:
            await pool.orchestrate(f"What is {worker} plus {sequence + 1}?", k=2)
            return None
        return await record(worker, sequence)

    return record, mixed


def _load_client(address: str, timeout_s: float) -> dict:
    # One attempt per call and a breaker that never opens: the services' own answers are counted.
    never_opens = CircuitBreaker(f"loadtest-{address}", failure_threshold=10**9)
    return {"timeout_s": timeout_s, "max_attempts": 1, "breaker": never_opens}


async def experience_scenarios(
    embedding: Restartable, experience: Restartable, concurrency: int, config: LoadConfig
) -> list[dict]:
    reports = []
    options = _load_client(experience.address, config.timeout_s)
    async with ExperienceClient(experience.address, TENANT, **options) as pool:
        record, mixed = _experience_ops(pool, f"c{concurrency}-embedding-kill")

        console.print(f"[cyan]concurrency {concurrency}: SIGKILL embedding under Record/Orchestrate")
        tally = await under_fault(
            mixed, concurrency, config, lambda: embedding.signal(signal.SIGKILL), embedding.start
        )
        lost = await lost_writes(experience.address, tally.acknowledged)
        reports.append(tally.report("embedding_kill", concurrency, lost))

        console.print(f"[cyan]concurrency {concurrency}: SIGKILL experience during a write burst")
        record, _ = _experience_ops(pool, f"c{concurrency}-experience-kill")
        tally = await under_fault(
            record, concurrency, config, lambda: experience.signal(signal.SIGKILL), experience.start
        )
        lost = await lost_writes(experience.address, tally.acknowledged)
        reports.append(tally.report("experience_kill", concurrency, lost))

    console.print(f"[cyan]concurrency {concurrency}: embedding frozen (SIGSTOP) for {config.fault_s:g} s")
    async with ExperienceClient(
        experience.address, TENANT, **_load_client(experience.address, config.slow_timeout_s)
    ) as pool:
        _, mixed = _experience_ops(pool, f"c{concurrency}-slow-embedding")
        tally = await under_fault(
            mixed,
            concurrency,
            config,
            lambda: embedding.signal(signal.SIGSTOP),
            lambda: embedding.signal(signal.SIGCONT),
        )
    lost = await lost_writes(experience.address, tally.acknowledged)
    reports.append(tally.report("slow_embedding", concurrency, lost))
    return reports


class TritonUnderEarlyExit:
    """Triton serving the default early-exit model on a fixed port, and earlyexit on top of it."""

    def __init__(self, work: Path) -> None:
        from services.earlyexit.backends.triton import render_repository
        from services.earlyexit.core.bundle import list_models, models_root
        from services.runtime.config import default_models_dir

        models = [m for m in list_models(default_models_dir()) if m.name == EARLYEXIT_MODEL]
        if not models:  # train a small one, as the integration tests do
            from services.earlyexit.offline.train import TrainConfig, train_dataset

            console.print(f"[yellow]no {EARLYEXIT_MODEL} early-exit model: training a small one")
            tiny = TrainConfig(epochs=1, train_limit=192, eval_limit=64)
            train_dataset(EARLYEXIT_MODEL, work / "trained", ["multiexit"], tiny)
            models = list_models(work / "trained")
        # Only this model: Triton loads every model in the repository before it is ready.
        models_root(work / "models").mkdir(parents=True)
        (models_root(work / "models") / EARLYEXIT_MODEL).symlink_to(models[0].directory.parent)
        self.work = work
        self.repository = render_repository(work / "repository", models, "local")
        self.port = free_port()
        self.server = self._server()
        self.flags = ["--models-dir", str(work / "models"), "--no-train-default", "--backend", "triton"]

    def _server(self) -> TritonServer:
        return TritonServer(self.repository, self.work / "server", grpc_port=self.port)

    def restart(self) -> None:
        self.server = self._server()
        self.server.start()


async def triton_scenario(triton: TritonUnderEarlyExit, earlyexit: Restartable, concurrency: int, config: LoadConfig) -> dict:
    console.print(f"[cyan]concurrency {concurrency}: Triton stopped under earlyexit")
    async with EarlyExitClient(earlyexit.address, **_load_client(earlyexit.address, config.timeout_s)) as client:

        async def classify(worker: int, sequence: int) -> None:
            await client.classify([f"a wonderful film, take {worker}.{sequence}", "a dull, lifeless script"])

        tally = await under_fault(classify, concurrency, config, triton.server.stop, triton.restart)
    return tally.report("triton_stop", concurrency, None)


def run_load(config: LoadConfig, *, triton: bool = True) -> dict:
    """Start the mesh, run every scenario at every concurrency level, stop the mesh."""
    started = time.monotonic()
    reports: list[dict] = []
    triton_note = "not requested (--no-triton)"
    with tempfile.TemporaryDirectory(prefix="rosemesh-load-") as scratch, ExitStack() as stack:
        console.print("[bold]starting embedding and experience on 127.0.0.1")
        embedding = stack.enter_context(running(Restartable("embedding", ["--grace-period-s", "2"])))
        experience_flags = ["--embedding-target", embedding.address, "--data-dir", f"{scratch}/experience"]
        experience = stack.enter_context(running(Restartable("experience", [*experience_flags, "--grace-period-s", "2"])))
        earlyexit = under_triton = None
        if triton and (reason := triton_unavailable_reason()) is not None:
            triton_note = f"skipped: Triton is not usable here: {reason}"
        elif triton:
            console.print("[bold]starting Triton and earlyexit on its Triton backend")
            under_triton = TritonUnderEarlyExit(Path(scratch) / "triton")
            under_triton.server.start()
            stack.callback(lambda: under_triton.server.stop())
            flags = [*under_triton.flags, "--triton-url", under_triton.server.grpc_url, "--grace-period-s", "2"]
            earlyexit = stack.enter_context(running(Restartable("earlyexit", flags)))
            triton_note = "tritonserver from nvidia-pytriton, python-backend wrappers of the ONNX segments"
        for level in config.concurrency:
            reports += asyncio.run(experience_scenarios(embedding, experience, level, config))
            if under_triton is not None and earlyexit is not None:
                reports.append(asyncio.run(triton_scenario(under_triton, earlyexit, level, config)))
    lost = [r["lost_acknowledged_writes"] for r in reports if r["lost_acknowledged_writes"] is not None]
    return {
        "concurrency": list(config.concurrency),
        "fault_s": config.fault_s,
        "timeout_s": config.timeout_s,
        "slow_timeout_s": config.slow_timeout_s,
        "triton": triton_note,
        "lost_acknowledged_writes": sum(lost),
        "all_recovered": all(r["recovery_s"] is not None for r in reports),
        "scenarios": reports,
        "seconds": round(time.monotonic() - started, 1),
    }
