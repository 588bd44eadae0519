"""Tokenize, micro-batch and embed: the embedding service's core, free of gRPC."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from services.common.batching import BatchingConfig, MicroBatcher
from services.common.tokens import EncodedText, TextEncoder, pad_batch
from services.embedding.core.ports import EmbeddingBackend

# Above this many characters per request, tokenize off the event loop.
_TOKENIZE_INLINE_CHARS = 16_384


@dataclass(frozen=True)
class EmbeddedText:
    vector: np.ndarray  # float32, unit length
    truncated: bool
    token_count: int


class Embedder:
    """One served model: its tokenizer, its runtime and its batching queue."""

    def __init__(
        self,
        name: str,
        encoder: TextEncoder,
        backend: EmbeddingBackend,
        dimension: int,
        precision: str,
        batching: BatchingConfig,
    ) -> None:
        self.name = name
        self.encoder = encoder
        self.backend = backend
        self.dimension = dimension
        self.precision = precision
        self.batcher: MicroBatcher[EncodedText, np.ndarray] = MicroBatcher(
            f"embedding:{name}", self._embed_batch, batching, size_of=lambda e: len(e.ids)
        )

    @property
    def max_tokens(self) -> int:
        return self.encoder.max_tokens

    async def start(self) -> None:
        await self.backend.start()
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        await self.backend.close()

    async def _embed_batch(self, batch: list[EncodedText]) -> list[np.ndarray]:
        ids, mask = pad_batch(batch)
        vectors = await self.backend.infer(ids, mask)
        return list(vectors.astype(np.float32, copy=False))

    async def embed(self, texts: list[str]) -> list[EmbeddedText]:
        if sum(map(len, texts)) > _TOKENIZE_INLINE_CHARS:
            encoded = await asyncio.to_thread(self.encoder.encode, texts)
        else:
            encoded = self.encoder.encode(texts)
        vectors = await self.batcher.submit(encoded)
        return [
            EmbeddedText(vector, e.truncated, len(e.ids)) for vector, e in zip(vectors, encoded, strict=True)
        ]
