"""Bootstrap for a rosemesh service: one grpc.aio server with health, reflection, tracing,
metrics, error mapping, message limits and keepalive; the one life cycle every service follows
(port open at once, load in the background, SERVING when loaded); a graceful SIGTERM drain."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from services.common.bundles import BundleRequest
from services.runtime.config import ServiceSettings
from services.runtime.interceptors import (
    ErrorMappingInterceptor,
    StreamWrapper,
    UnaryWrapper,
    WrappingInterceptor,
)
from services.runtime.metrics import GrpcServerMetrics, start_metrics_server
from services.runtime.security import CallContextInterceptor, server_credentials
from services.runtime.telemetry import setup_logging, setup_tracing

log = logging.getLogger(__name__)

#: Trailing metadata of a health check while the service loads: what it is doing, UTF-8 (a
#: binary header, since progress bars write arrows and other text an ASCII header cannot carry).
PROGRESS_METADATA = "rosemesh-progress-bin"
#: A health service name that is SERVING from the moment the port opens until the drain: the
#: process is alive, whether or not it has loaded (Kubernetes' startup and liveness probes).
LIVENESS_SERVICE = "rosemesh.liveness"
#: Methods that answer while the service loads.
ALWAYS_OPEN = ("/grpc.health.", "/grpc.reflection.")
#: How often a loading service logs progress that only counts up.
LOG_INTERVAL_S = 10.0


class Service(ABC):
    """One rosemesh service. Every service lives the same life:

    1. it is built from validated settings, and construction does no work (no file read, no
       model loaded, no port opened);
    2. ``register`` adds its servicers, and the gRPC port opens at once with health ``NOT_SERVING``;
    3. ``load`` runs in the background: it waits for the bundles it serves (``bundles`` says which
       are missing and how the CLI or supervisor makes them), opens backends and loads models,
       reporting progress that health checks and early calls see;
    4. health turns ``SERVING``; on SIGHUP ``reload`` resolves the model pointers again and swaps
       in what changed, in-flight calls finishing on the old models;
    5. on SIGTERM health turns ``NOT_SERVING``, in-flight calls drain, ``stop`` releases the
       backends and the process exits.
    """

    #: Short name, e.g. "embedding"; used in logs, metrics and the trace resource.
    name: str
    #: The settings this service reads from flags and ROSEMESH_<NAME>_* variables.
    settings_class: type[ServiceSettings]

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings

    def bundles(self) -> Sequence[BundleRequest]:
        """Bundles this service needs that are missing and may be made here, and how to make them."""
        return ()

    @property
    @abstractmethod
    def service_names(self) -> Sequence[str]:
        """Fully qualified protobuf service names, for health and reflection."""

    @abstractmethod
    def register(self, server: grpc.aio.Server) -> None:
        """Add the servicers to ``server``. They may rely on what ``load`` sets up: no call
        reaches them before it has finished."""

    async def load(self, progress: StartProgress) -> None:
        """Wait for bundles, open backends and load models, in the background."""

    async def reload(self) -> str:
        """Resolve the model versions again and serve what changed; returns what it did."""
        return "nothing to reload"

    async def stop(self) -> None:
        """Release backends; runs after in-flight RPCs have drained."""


class StartProgress:
    """What a loading service is doing, for its log, its health checks and early calls."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.message = "starting"
        self.ready = False
        self._logged = ("", 0.0)

    def report(self, message: str) -> None:
        """Logged when the kind of message changes, or every ``LOG_INTERVAL_S`` while it only counts up."""
        self.message = message
        kind, now = re.sub(r"[\d.]+", "#", message), time.monotonic()
        if kind != self._logged[0] or now - self._logged[1] >= LOG_INTERVAL_S:
            self._logged = (kind, now)
            log.info("loading", extra={"progress": message})

    def unavailable(self) -> str:
        return f"{self.service} is not serving yet: {self.message}"


class ProgressHealthServicer(health.aio.HealthServicer):
    """grpc.health.v1 whose Check carries the start progress in the ``rosemesh-progress-bin``
    trailing metadata while the service is NOT_SERVING."""

    def __init__(self, progress: StartProgress) -> None:
        super().__init__()
        self.progress = progress

    async def Check(self, request, context):  # noqa: N802 - the gRPC method name
        if not self.progress.ready:
            context.set_trailing_metadata(((PROGRESS_METADATA, self.progress.message.encode()),))
        return await super().Check(request, context)


class ReadinessGate(WrappingInterceptor):
    """Calls to the service's own methods answer UNAVAILABLE, with the progress, until it has
    loaded. Once it has, a call passes straight through: nothing is wrapped or allocated."""

    def __init__(self, progress: StartProgress) -> None:
        self.progress = progress

    def wrappers(self, method: str) -> tuple[UnaryWrapper, StreamWrapper] | None:
        if self.progress.ready or method.startswith(ALWAYS_OPEN):
            return None
        return self._refuse_unary, self._refuse_stream

    def _refuse_unary(self, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def refused(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNAVAILABLE, self.progress.unavailable())

        return refused

    def _refuse_stream(self, behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        async def refused(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await context.abort(grpc.StatusCode.UNAVAILABLE, self.progress.unavailable())
            yield  # an async generator, like the behaviour it stands for

        return refused


def channel_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.so_reuseport", 0),
        # A client keeps one HTTP/2 connection per server it resolved; closing connections after
        # an age makes it resolve again, so that pods added by a scale-out get their share.
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
        ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * 1000)),
    ]


class ServiceRunner:
    """Runs a Service until SIGTERM or SIGINT, then drains and stops it."""

    def __init__(self, service: Service, settings: ServiceSettings) -> None:
        self.service = service
        self.settings = settings
        self.progress = StartProgress(service.name)
        self.health = ProgressHealthServicer(self.progress)
        self.metrics = GrpcServerMetrics(service.name)
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.failed = False
        self._stopping = asyncio.Event()
        self._reloading: asyncio.Task[None] | None = None

    async def _load(self) -> None:
        try:
            await self.service.load(self.progress)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a service that cannot load stops, saying why
            log.exception("load failed", extra={"progress": self.progress.message})
            self.progress.report(f"load failed: {exc}")
            self.failed = True
            self._stopping.set()
            return
        self.progress.ready = True
        for name in ("", *self.service.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"address": f"{self.settings.host}:{self.port}"})

    def _request_reload(self) -> None:
        if not self.progress.ready:
            log.warning("reload ignored: the service has not loaded yet")
        elif self._reloading is not None and not self._reloading.done():
            log.warning("reload ignored: a reload is already running")
        else:
            self._reloading = asyncio.create_task(self._reload())

    async def _reload(self) -> None:
        try:
            outcome = await self.service.reload()
        except Exception:  # noqa: BLE001 - a failed reload keeps serving what it served
            log.exception("reload failed; still serving the models loaded before")
        else:
            log.info("reloaded", extra={"outcome": outcome})

    async def run(self) -> None:
        settings, service = self.settings, self.service
        setup_logging(service.name, settings.log_level)
        provider = setup_tracing(f"rosemesh-{service.name}")
        server = grpc.aio.server(
            interceptors=[
                aio_server_interceptor(tracer_provider=provider),
                self.metrics.interceptor(),
                CallContextInterceptor(settings.token_table()),
                ReadinessGate(self.progress),
                ErrorMappingInterceptor(),
            ],
            options=channel_options(settings),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        service.register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [*service.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, server)
        address = f"{settings.host}:{settings.port}"
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            client_ca = settings.tls_ca_file if settings.tls_require_client_cert else None
            credentials = server_credentials(settings.tls_cert_file, settings.tls_key_file, client_ca)
            self.port = server.add_secure_port(address, credentials)
        else:
            self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise SystemExit(f"cannot bind {settings.host}:{settings.port}")
        self.metrics_port = start_metrics_server(settings.host, settings.metrics_port)
        for name in ("", *service.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await server.start()
        log.info(
            "listening",
            extra={
                "address": f"{settings.host}:{self.port}",
                "metrics_port": self.metrics_port,
                "tls": "mutual" if settings.tls_require_client_cert else bool(settings.tls_cert_file),
                "auth": settings.auth_tokens_file is not None,
            },
        )

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._request_reload)
        loading = asyncio.create_task(self._load())
        await self._stopping.wait()
        # Committed to a clean exit: a repeated signal (a supervisor and a process group both
        # signalling, say) must not cut the drain or the exit short.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)

        loop.remove_signal_handler(signal.SIGHUP)
        loading.cancel()
        if self._reloading is not None:
            await asyncio.gather(self._reloading, return_exceptions=True)
        log.info("draining", extra={"grace_period_s": settings.grace_period_s})
        await self.health.enter_graceful_shutdown()
        await server.stop(settings.grace_period_s)
        await asyncio.gather(loading, return_exceptions=True)
        await service.stop()
        provider.shutdown()
        log.info("stopped")


def serve(service: Service, settings: ServiceSettings) -> None:
    """Run ``service`` in this process until it is told to stop; exits 1 when it could not load."""
    runner = ServiceRunner(service, settings)
    asyncio.run(runner.run())
    if runner.failed:
        raise SystemExit(1)
