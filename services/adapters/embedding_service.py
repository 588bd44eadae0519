"""The embedding service as the backend of another service's core: texts in, unit vectors out.

The one gateway experience, critique and multi-label reach it through: built with the calling
service's client security settings, and mapping the embedding service's answers to the domain
errors once, so that every caller reports them alike (a text it refuses is the caller's
INVALID_ARGUMENT, not an outage).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import numpy as np
from rosemesh.embedding.v1 import embedding_pb2

from services.common.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    InvalidInput,
    Overloaded,
    PermissionDenied,
    ServiceError,
)
from services.embedding.client import EmbeddingClient

#: Between attempts to reach an embedding service that is not up yet.
_RETRY_S = 1.0
_REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


class RemoteEmbedder:
    """Fills a core's ``TextEmbedder`` port over gRPC. The channel belongs to the event loop that
    creates this object, so build it inside the service's ``load``."""

    def __init__(self, target: str, timeout_s: float, **security: object) -> None:
        self.target = target
        self.client = EmbeddingClient(target, timeout_s=timeout_s, **security)

    async def wait_ready(self, report: Callable[[str], None]) -> embedding_pb2.ModelInfo:
        """The service's default model, once it answers (pods start in any order). Refused
        credentials are not waited out: nothing this process holds will change them."""
        while True:
            try:
                models = await self.client.list_models(max_attempts=1)
            except (grpc.aio.AioRpcError, BackendUnavailable) as exc:
                if isinstance(exc, grpc.aio.AioRpcError):
                    if exc.code() in _REFUSED:
                        raise self._domain_error(exc) from exc
                    reason = f"{exc.code().name} {exc.details()}"
                else:
                    reason = str(exc)
                report(f"waiting for the embedding service at {self.target}: {reason}")
                await asyncio.sleep(_RETRY_S)
                continue
            return next((m for m in models if m.is_default), models[0])

    async def embed(self, texts: list[str]) -> np.ndarray:
        try:
            return (await self.client.embed(texts)).vectors
        except grpc.aio.AioRpcError as exc:
            raise self._domain_error(exc) from exc

    def _domain_error(self, exc: grpc.aio.AioRpcError) -> ServiceError:
        code, details = exc.code(), exc.details() or ""
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return InvalidInput.single("text", f"the embedding service refused it: {details}")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return Overloaded(f"the embedding service at {self.target} is overloaded: {details}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return DeadlineExceeded(f"the embedding service at {self.target} did not answer in time")
        if code in _REFUSED:
            return PermissionDenied(f"the embedding service at {self.target} refused the credentials: {details}")
        return BackendUnavailable(f"embedding service at {self.target} is unavailable: {details}")

    async def close(self) -> None:
        await self.client.close()
