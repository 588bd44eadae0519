"""`rosemesh up`: every implemented service as its own process, watched until told to stop; and the
makers (export, training) of the bundles services wait for, each run as its own process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table

from services.catalog import SERVICES, service_class
from services.common.bundles import (
    PROGRESS_FILE_ENV,
    BundleRequest,
    clear_progress,
    progress_file,
    read_progress,
    write_progress,
)
from services.common.net import free_port
from services.runtime.config import ServiceSettings, load_settings
from services.runtime.security import ClientTls, channel_credentials


@dataclass
class RunningService:
    name: str
    settings: ServiceSettings
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"


#: Set to 0 for a `rosemesh serve` whose bundles someone else makes (the supervisor does, for its children).
MAKE_BUNDLES_ENV = "ROSEMESH_MAKE_BUNDLES"


def make_bundle(request: BundleRequest, started: Callable[[subprocess.Popen[bytes]], None] | None = None) -> None:
    """Run one maker to the end (``rosemesh COMMAND``), its progress mirrored beside the bundle."""
    progress = progress_file(request.bundle.directory)
    env = os.environ | request.env | {PROGRESS_FILE_ENV: str(progress)}
    try:
        with subprocess.Popen([sys.executable, "-m", "services.cli", *request.command], env=env) as maker:
            if started is not None:
                started(maker)
            code = maker.wait()
    finally:
        clear_progress(progress)
    if code != 0:
        raise RuntimeError(f"making {request.bundle.what} failed (exit {code}): rosemesh {' '.join(request.command)}")


class BundleMakers:
    """Makes bundles in the background, cheapest first: one maker at a time on the cores (two
    cores, one maker), and downloads one at a time beside them, so a long fetch holds up no build."""

    def __init__(self, requests: Sequence[BundleRequest]) -> None:
        self.requests = sorted(requests, key=lambda r: r.minutes)
        lanes = [[r for r in self.requests if r.downloads], [r for r in self.requests if not r.downloads]]
        self._lanes = [threading.Thread(target=self._run, args=(lane,), name="bundle-makers", daemon=True)
                       for lane in lanes if lane]
        self.error: str | None = None
        self._current: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        for lane in self._lanes:
            lane.start()

    def _begin(self, maker: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._current.add(maker)

    def _run(self, lane: list[BundleRequest]) -> None:
        # A waiting service shows its lane's queue until its own maker starts and reports.
        for place, request in enumerate(lane):
            if place:
                ahead = ", ".join(r.bundle.what for r in lane[:place])
                write_progress(progress_file(request.bundle.directory), f"queued behind {ahead}")
        for request in lane:
            if self._stopped or self.error:
                return
            try:
                make_bundle(request, self._begin)
            except RuntimeError as exc:
                if not self._stopped:
                    self.error = str(exc)
                return

    def stop(self) -> None:
        """Stop the makers that are running (their bundles stay unpublished) and start no other."""
        self._stopped = True
        with self._lock:
            running = [maker for maker in self._current if maker.poll() is None]
        for maker in running:
            maker.terminate()
        for lane in self._lanes:
            lane.join(timeout=30)
        for request in self.requests:
            clear_progress(progress_file(request.bundle.directory))

    @property
    def busy(self) -> bool:
        return any(lane.is_alive() for lane in self._lanes)

    def progress(self) -> list[str]:
        """What each unfinished maker reports: "<bundle>: <progress>", or that it is queued."""
        lines = []
        for request in self.requests:
            if request.bundle.present():
                continue
            said = read_progress(progress_file(request.bundle.directory))
            lines.append(f"{request.bundle.what}: {said or 'queued'}")
        return lines


def spawn_service(name: str, flags: Sequence[str] = (), startup_timeout_s: float = 120.0) -> RunningService:
    """Make what ``rosemesh serve NAME FLAGS`` needs, start it as a child process (it inherits this
    environment) and wait until it is SERVING."""
    cls = service_class(name)
    settings = load_settings(cls.settings_class, list(flags))
    for request in cls(settings).bundles():
        make_bundle(request)
    service = start_service(name, flags, settings)
    try:
        wait_until_serving(service.address, service.process, startup_timeout_s, settings.client_tls())
    except BaseException:
        stop_all([service])
        raise
    return service


def start_service(name: str, flags: Sequence[str], settings: ServiceSettings) -> RunningService:
    """``rosemesh serve NAME FLAGS`` as a child process that leaves making bundles to us."""
    env = os.environ | {MAKE_BUNDLES_ENV: "0"}
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", name, *flags], env=env)
    return RunningService(name, settings, process)


@contextmanager
def service_process(
    name: str, flags: Sequence[str] = (), startup_timeout_s: float = 120.0
) -> Iterator[RunningService]:
    """A service on free 127.0.0.1 ports for the length of the block (tests and benchmarks)."""
    ports = ["--host", "127.0.0.1", "--port", str(free_port()), "--metrics-port", str(free_port())]
    if "http_port" in service_class(name).settings_class.model_fields:
        ports += ["--http-port", str(free_port())]
    service = spawn_service(name, [*ports, *flags], startup_timeout_s)
    try:
        yield service
    finally:
        stop_all([service])


def health_channel(address: str, tls: ClientTls | None = None) -> grpc.Channel:
    return grpc.secure_channel(address, channel_credentials(tls)) if tls else grpc.insecure_channel(address)


def health_status(stub: health_pb2_grpc.HealthStub) -> int | None:
    """One grpc.health.v1 check: the status the server gives, or None when it does not answer."""
    try:
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status
    except grpc.RpcError:
        return None


def answers_serving(stub: health_pb2_grpc.HealthStub) -> bool:
    """True when the server says SERVING, False otherwise or unreachable."""
    return health_status(stub) == health_pb2.HealthCheckResponse.SERVING


def wait_until_serving(
    address: str, process: subprocess.Popen[bytes], timeout_s: float, tls: ClientTls | None = None
) -> None:
    """Poll grpc.health.v1 until the server says SERVING; fail fast if the process exits."""
    deadline = time.monotonic() + timeout_s
    with health_channel(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{address}: process exited with code {process.returncode} before serving")
            if answers_serving(stub):
                return
            time.sleep(0.1)
    raise TimeoutError(f"{address}: not SERVING after {timeout_s:.0f}s")


def stop_all(running: list[RunningService], console: Console | None = None) -> None:
    for service in running:
        if service.process.poll() is None:
            service.process.send_signal(signal.SIGTERM)
    for service in running:
        try:
            code = service.process.wait(timeout=service.settings.grace_period_s + 5)
        except subprocess.TimeoutExpired:
            service.process.kill()
            code = service.process.wait()
        if console is not None:
            console.print(f"stopped {service.name} (exit {code})")


#: How often `rosemesh up` prints the makers' progress while services wait for their models.
PROGRESS_EVERY_S = 30.0


def up(names: list[str] | None = None, startup_timeout_s: float = 120.0) -> int:
    """Every service at once (each opens its port at once and loads in the background), the
    makers of missing bundles one after another; each service is announced as it turns SERVING."""
    console = Console(stderr=True)
    running: list[RunningService] = []
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    requests: list[BundleRequest] = []
    for name in names or list(SERVICES):
        cls = service_class(name)
        settings = load_settings(cls.settings_class, [])
        requests += cls(settings).bundles()
        running.append(start_service(name, [], settings))
    makers = BundleMakers(requests)
    makers.start()
    table = Table(title="rosemesh is starting (Ctrl-C stops it)")
    for column in ("service", "gRPC", "metrics", "pid"):
        table.add_column(column)
    for s in running:
        table.add_row(s.name, s.address, f"http://{s.settings.host}:{s.settings.metrics_port}/metrics", str(s.process.pid))
    Console().print(table)
    for request in makers.requests:
        console.print(f"making {request.bundle.what} (rosemesh {' '.join(request.command)})")

    waiting = {s.name for s in running}
    channels = {s.name: health_channel(s.address, s.settings.client_tls()) for s in running}
    stubs = {name: health_pb2_grpc.HealthStub(channel) for name, channel in channels.items()}
    deadline = time.monotonic() + startup_timeout_s
    code, announced, all_serving, progress_said = 0, False, False, 0.0
    while not stopping:
        for s in running:
            if s.process.poll() is not None:
                console.print(f"[red]{s.name} exited with code {s.process.returncode}; stopping the mesh")
                stopping, code = True, 1
        if makers.error:
            console.print(f"[red]{makers.error}; stopping the mesh")
            stopping, code = True, 1
        statuses = {s.name: health_status(stubs[s.name]) for s in running if s.name in waiting}
        for s in running:
            if statuses.get(s.name) == health_pb2.HealthCheckResponse.SERVING:
                waiting.discard(s.name)
                console.print(f"[green]{s.name} is serving on {s.address}")
        # Up: every service serves, or answers while the model it waits for is being made.
        answering = all(status is not None for status in statuses.values())
        if not waiting and not all_serving:
            all_serving = True
            console.print("[green]every service is serving" if announced else "[green]rosemesh is up")
            announced = True
        elif waiting and not announced and answering and makers.busy:
            announced = True
            names_waiting = ", ".join(sorted(waiting))
            console.print(f"[green]rosemesh is up[/]; {names_waiting} answer UNAVAILABLE until their models are made")
        if announced and waiting and time.monotonic() - progress_said >= PROGRESS_EVERY_S:
            progress_said = time.monotonic()
            for line in makers.progress():
                console.print(f"[cyan]making {line}")
        if makers.busy:
            deadline = time.monotonic() + startup_timeout_s
        elif waiting and time.monotonic() > deadline:
            console.print(f"[red]not SERVING after {startup_timeout_s:.0f}s: {', '.join(sorted(waiting))}")
            stopping, code = True, 1
        time.sleep(0.5)
    if waiting and code == 0:
        console.print("[yellow]stop requested while starting; stopping what has started")
        code = 1
    for channel in channels.values():
        channel.close()
    makers.stop()
    stop_all(running, console)
    return code
