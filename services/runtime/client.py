"""A typed client helper for calling rosemesh services with deadlines, retries and tracing.

    async with ServiceClient("127.0.0.1:50051") as client:
        stub = client.stub(embedding_pb2_grpc.EmbeddingServiceStub)
        response = await client.call(stub.Embed, EmbedRequest(texts=["hi"]))

Only UNAVAILABLE is retried (with exponential backoff and jitter): it means the call never
reached the service, so retrying is safe for any method.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")
StubT = TypeVar("StubT")

DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def is_unavailable(error: BaseException) -> bool:
    return isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.UNAVAILABLE


class ServiceClient:
    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 4,
        max_backoff_s: float = 2.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.max_backoff_s = max_backoff_s
        self.channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.keepalive_time_ms", 30_000),
            ],
            interceptors=aio_client_interceptors(),
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
    ) -> ResponseT:
        """Call ``method`` with a deadline, retrying while the service is UNAVAILABLE."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_unavailable),
            stop=stop_after_attempt(max_attempts or self.max_attempts),
            wait=wait_random_exponential(multiplier=0.05, max=self.max_backoff_s),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await method(request, timeout=timeout_s or self.timeout_s, metadata=metadata)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> ServiceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
