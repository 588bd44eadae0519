"""A typed client helper for calling rosemesh services with deadlines, retries and tracing.

    async with ServiceClient("127.0.0.1:50051") as client:
        stub = client.stub(embedding_pb2_grpc.EmbeddingServiceStub)
        response = await client.call(stub.Embed, EmbedRequest(texts=["hi"]))

Only UNAVAILABLE is retried (with exponential backoff and jitter), and only for calls the
caller marks idempotent (the default; pass ``idempotent=False`` for the others). Inside a
service, the deadline of the call being served caps each outbound call, and the caller's
credentials pass through (see services.runtime.security). A circuit breaker per client (one
backend) turns a dead backend into an immediate UNAVAILABLE (CircuitOpen) until a trial call
succeeds. TLS and mutual TLS with ``tls=ClientTls(...)``; a tenant token with ``token=``.

Calls are spread round robin over every address the target resolves to: use
``dns:///service-name:port`` for a headless Kubernetes Service (one address per ready pod).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from services.common.breaker import CircuitBreaker, CircuitOpen
from services.runtime.security import ClientTls, channel_credentials, outbound

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")
StubT = TypeVar("StubT")

DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def is_unavailable(error: BaseException) -> bool:
    return isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.UNAVAILABLE


def is_backend_failure(error: BaseException) -> bool:
    """What counts against a backend's circuit: it could not be reached, or did not answer in time."""
    return isinstance(error, grpc.aio.AioRpcError) and error.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )


class ServiceClient:
    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 4,
        max_backoff_s: float = 2.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: ClientTls | None = None,
        token: str | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.max_backoff_s = max_backoff_s
        self.token = token
        self.breaker = breaker or CircuitBreaker(target, is_failure=is_backend_failure)
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            # Reconnect to a restarted peer within a second, not after gRPC's backoff (up to 120 s).
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 1_000),
            # Every address the target resolves to gets calls in turn: a headless Service's
            # pods through "dns:///name:port", or a list as "ipv4:host:port,host:port".
            ("grpc.lb_policy_name", "round_robin"),
        ]
        if tls is None:
            self.channel = grpc.aio.insecure_channel(target, options=options, interceptors=aio_client_interceptors())
        else:
            self.channel = grpc.aio.secure_channel(
                target, channel_credentials(tls), options=options, interceptors=aio_client_interceptors()
            )

    def stub(self, stub_class: Callable[[grpc.aio.Channel], StubT]) -> StubT:
        return stub_class(self.channel)

    async def call(
        self,
        method: Callable[..., Awaitable[ResponseT]],
        request: Any,
        *,
        timeout_s: float | None = None,
        metadata: tuple[tuple[str, str], ...] | None = None,
        max_attempts: int | None = None,
        idempotent: bool = True,
    ) -> ResponseT:
        """Call ``method`` with a deadline; an idempotent call is retried while the service is
        UNAVAILABLE (an open circuit counts as UNAVAILABLE) and the caller's deadline allows."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda e: is_unavailable(e) or isinstance(e, CircuitOpen)),
            stop=stop_after_attempt((max_attempts or self.max_attempts) if idempotent else 1),
            wait=wait_random_exponential(multiplier=0.05, max=self.max_backoff_s),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                timeout, forwarded = outbound(timeout_s or self.timeout_s, self.token)
                with self.breaker.guard():
                    return await method(request, timeout=timeout, metadata=(*forwarded, *(metadata or ())))
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> ServiceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
