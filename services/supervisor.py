"""`rosemesh up`: every implemented service as its own process, watched until told to stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table

from services.catalog import SERVICES, service_class
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


def spawn_service(name: str, flags: Sequence[str] = (), startup_timeout_s: float = 120.0) -> RunningService:
    """Start ``rosemesh serve NAME FLAGS`` as a child process (it inherits this environment)
    and wait until it is SERVING."""
    cls = service_class(name)
    settings = load_settings(cls.settings_class, list(flags))
    cls.prepare(settings)
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", name, *flags])
    service = RunningService(name, settings, process)
    try:
        wait_until_serving(service.address, process, startup_timeout_s, settings.client_tls())
    except BaseException:
        stop_all([service])
        raise
    return service


@contextmanager
def service_process(
    name: str, flags: Sequence[str] = (), startup_timeout_s: float = 120.0
) -> Iterator[RunningService]:
    """A service on free 127.0.0.1 ports for the length of the block (tests and benchmarks)."""
    ports = ["--host", "127.0.0.1", "--port", str(free_port()), "--metrics-port", str(free_port())]
    service = spawn_service(name, [*ports, *flags], startup_timeout_s)
    try:
        yield service
    finally:
        stop_all([service])


def wait_until_serving(
    address: str, process: subprocess.Popen[bytes], timeout_s: float, tls: ClientTls | None = None
) -> None:
    """Poll grpc.health.v1 until the server says SERVING; fail fast if the process exits."""
    deadline = time.monotonic() + timeout_s
    channel = grpc.secure_channel(address, channel_credentials(tls)) if tls else grpc.insecure_channel(address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{address}: process exited with code {process.returncode} before serving")
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
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


class StopRequested(Exception):
    """SIGTERM or Ctrl-C arrived while the mesh was still starting (e.g. training a model)."""


def up(names: list[str] | None = None, startup_timeout_s: float = 120.0) -> int:
    console = Console(stderr=True)
    running: list[RunningService] = []
    starting, stopping = True, False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if starting:  # interrupt the start wherever it is; once up, the watch loop sees the flag
            raise StopRequested

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        for name in names or list(SERVICES):
            running.append(spawn_service(name, startup_timeout_s=startup_timeout_s))
        starting = False
        table = Table(title="rosemesh is up (Ctrl-C stops it)")
        for column in ("service", "gRPC", "metrics", "pid"):
            table.add_column(column)
        for s in running:
            metrics = f"http://{s.settings.host}:{s.settings.metrics_port}/metrics"
            table.add_row(s.name, s.address, metrics, str(s.process.pid))
        Console().print(table)
        while not stopping:
            for s in running:
                if s.process.poll() is not None:
                    console.print(f"[red]{s.name} exited with code {s.process.returncode}; stopping the mesh")
                    stop_all(running, console)
                    return 1
            time.sleep(0.2)
    except (RuntimeError, TimeoutError) as exc:
        console.print(f"[red]{exc}")
        stop_all(running, console)
        return 1
    except StopRequested:
        console.print("[yellow]stop requested while starting; stopping what has started")
        stop_all(running, console)
        return 1
    stop_all(running, console)
    return 0
