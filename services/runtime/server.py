"""Bootstrap for a rosemesh service: one grpc.aio server with health, reflection, tracing,
metrics, error mapping, message limits and keepalive, and a graceful SIGTERM drain."""

from __future__ import annotations

import asyncio
import logging
import signal
from abc import ABC, abstractmethod
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from services.runtime.config import ServiceSettings
from services.runtime.interceptors import ErrorMappingInterceptor
from services.runtime.metrics import GrpcServerMetrics, start_metrics_server
from services.runtime.security import CallContextInterceptor, server_credentials
from services.runtime.telemetry import setup_logging, setup_tracing

log = logging.getLogger(__name__)


class Service(ABC):
    """One rosemesh service: what it registers on the server, and what it holds open."""

    #: Short name, e.g. "embedding"; used in logs, metrics and the trace resource.
    name: str
    #: The settings this service reads from flags and ROSEMESH_<NAME>_* variables.
    settings_class: type[ServiceSettings]

    @classmethod
    def prepare(cls, settings: ServiceSettings) -> None:
        """Slow one-off work (model export) with progress shown; runs before the server process starts."""

    @property
    @abstractmethod
    def service_names(self) -> Sequence[str]:
        """Fully qualified protobuf service names, for health and reflection."""

    @abstractmethod
    def register(self, server: grpc.aio.Server) -> None:
        """Add the servicers to ``server``; called after start()."""

    async def start(self) -> None:
        """Open backends and load models; runs before the server starts listening."""

    async def stop(self) -> None:
        """Release backends; runs after in-flight RPCs have drained."""


def channel_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.so_reuseport", 0),
    ]


class ServiceRunner:
    """Runs a Service until SIGTERM or SIGINT, then drains and stops it."""

    def __init__(self, service: Service, settings: ServiceSettings) -> None:
        self.service = service
        self.settings = settings
        self.health = health.aio.HealthServicer()
        self.metrics = GrpcServerMetrics(service.name)
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        settings, service = self.settings, self.service
        setup_logging(service.name, settings.log_level)
        provider = setup_tracing(f"rosemesh-{service.name}")
        server = grpc.aio.server(
            interceptors=[
                aio_server_interceptor(tracer_provider=provider),
                self.metrics.interceptor(),
                CallContextInterceptor(settings.token_table()),
                ErrorMappingInterceptor(),
            ],
            options=channel_options(settings),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        # Models and backends first, so that the server never listens half-initialised.
        await service.start()
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
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        await server.start()
        log.info(
            "serving",
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
        await self._stopping.wait()
        # Committed to a clean exit: a repeated signal (a supervisor and a process group both
        # signalling, say) must not cut the drain or the exit short.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)

        log.info("draining", extra={"grace_period_s": settings.grace_period_s})
        await self.health.enter_graceful_shutdown()
        await server.stop(settings.grace_period_s)
        await service.stop()
        provider.shutdown()
        log.info("stopped")


def serve(service: Service, settings: ServiceSettings) -> None:
    """Run ``service`` in this process until it is told to stop; returns normally (exit 0)."""
    asyncio.run(ServiceRunner(service, settings).run())
