"""Prometheus metrics for gRPC servers, served on their own HTTP port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from services.runtime.interceptors import StreamWrapper, UnaryWrapper, WrappingInterceptor

# Millisecond-scale buckets, in seconds as Prometheus convention wants.
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075,
    0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class GrpcServerMetrics:
    def __init__(self, service: str, registry: CollectorRegistry = REGISTRY) -> None:
        labels = ["service", "grpc_method"]
        self.service = service
        self.latency = Histogram(
            "rosemesh_grpc_server_handling_seconds",
            "Time to handle a gRPC call, by method.",
            labels,
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.handled = Counter(
            "rosemesh_grpc_server_handled",
            "gRPC calls completed, by method and status code.",
            [*labels, "grpc_code"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "rosemesh_grpc_server_in_flight", "gRPC calls being handled now.", labels, registry=registry
        )

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return _MetricsInterceptor(self)


SERVED_MODEL = Info(
    "rosemesh_served_model", "The version of each model a service answers with.", ["service", "model"]
)


_reported_models: dict[str, set[str]] = {}


def report_served_versions(service: str, versions: dict[str, str]) -> None:
    """Label each served model with its version; models no longer served are dropped."""
    for model in _reported_models.get(service, set()) - versions.keys():
        SERVED_MODEL.remove(service, model)
    for model, version in versions.items():
        SERVED_MODEL.labels(service, model).info({"version": version})
    _reported_models[service] = set(versions)


def start_metrics_server(host: str, port: int, registry: CollectorRegistry = REGISTRY) -> int:
    """Serve /metrics; returns the bound port (useful when ``port`` is 0)."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server.server_address[1]


def _status_name(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):  # grpc.aio reports an int when set through abort()
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"
    return "OK" if error is None else "UNKNOWN"


class _MetricsInterceptor(WrappingInterceptor):
    def __init__(self, metrics: GrpcServerMetrics) -> None:
        self.metrics = metrics

    def wrappers(self, method: str) -> tuple[UnaryWrapper, StreamWrapper]:
        m = self.metrics
        labels = (m.service, method)

        def observe(context: grpc.aio.ServicerContext, start: float, error: BaseException | None) -> None:
            m.latency.labels(*labels).observe(time.perf_counter() - start)
            m.handled.labels(*labels, _status_name(context, error)).inc()
            m.in_flight.labels(*labels).dec()

        def wrap_unary_response(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def wrapped(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
                m.in_flight.labels(*labels).inc()
                start, error = time.perf_counter(), None
                try:
                    return await behavior(request_or_iterator, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    observe(context, start, error)

            return wrapped

        def wrap_stream_response(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
            async def wrapped(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                m.in_flight.labels(*labels).inc()
                start, error = time.perf_counter(), None
                try:
                    async for response in behavior(request_or_iterator, context):
                        yield response
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    observe(context, start, error)

            return wrapped

        return wrap_unary_response, wrap_stream_response

