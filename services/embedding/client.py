"""Typed client for the embedding service, for other services and product backends."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rosemesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc

from services.runtime.client import ServiceClient


@dataclass(frozen=True)
class Embeddings:
    model: str
    vectors: np.ndarray  # float32 [n, dimension]
    truncated: list[bool]
    token_counts: list[int]


class EmbeddingClient(ServiceClient):
    def __init__(self, target: str, **options: object) -> None:
        super().__init__(target, **options)  # type: ignore[arg-type]
        self._stub = self.stub(embedding_pb2_grpc.EmbeddingServiceStub)

    async def embed(self, texts: list[str], model: str = "", timeout_s: float | None = None) -> Embeddings:
        request = embedding_pb2.EmbedRequest(
            texts=texts, model=model, encoding=embedding_pb2.VECTOR_ENCODING_PACKED_F32
        )
        response = await self.call(self._stub.Embed, request, timeout_s=timeout_s)
        shape = (len(response.embeddings), response.dimension)
        if response.packed:
            vectors = np.frombuffer(response.packed, dtype="<f4").astype(np.float32).reshape(shape)
        else:  # a server from before packed replies
            vectors = np.array([e.values for e in response.embeddings], dtype=np.float32).reshape(shape)
        return Embeddings(
            model=response.model,
            vectors=vectors,
            truncated=[e.truncated for e in response.embeddings],
            token_counts=[e.token_count for e in response.embeddings],
        )

    async def list_models(self, max_attempts: int | None = None) -> list[embedding_pb2.ModelInfo]:
        response = await self.call(
            self._stub.ListModels, embedding_pb2.ListModelsRequest(), max_attempts=max_attempts
        )
        return list(response.models)
