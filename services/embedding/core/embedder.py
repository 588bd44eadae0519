"""Tokenize, micro-batch and embed: the embedding service's core, free of gRPC."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

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


@dataclass(frozen=True)
class Timing:
    """Where a request's time went, as TEI reports it: seconds tokenizing, waiting for a batch,
    and from its first batch's start to its last batch's end."""

    tokenization_s: float
    queue_s: float
    inference_s: float


@dataclass(frozen=True)
class EmbedResult:
    texts: list[EmbeddedText]
    timing: Timing

    def matrix(self) -> np.ndarray:
        """The vectors as one float32 [n, dimension] array."""
        return np.stack([e.vector for e in self.texts])


@dataclass(frozen=True)
class _BatchRow:
    vector: np.ndarray
    started: float
    finished: float


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
        tier: str = "exact",
    ) -> None:
        self.name = name
        self.tier = tier
        self.encoder = encoder
        self.backend = backend
        self.dimension = dimension
        self.precision = precision
        config = replace(batching, concurrent_batches=backend.concurrency)
        self.batcher: MicroBatcher[EncodedText, _BatchRow] = MicroBatcher(
            f"embedding:{name}", self._embed_batch, config, size_of=lambda e: len(e.ids)
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

    async def _embed_batch(self, batch: list[EncodedText]) -> list[_BatchRow]:
        started = time.perf_counter()
        ids, mask = pad_batch(batch)
        vectors = (await self.backend.infer(ids, mask)).astype(np.float32, copy=False)
        finished = time.perf_counter()
        return [_BatchRow(vector, started, finished) for vector in vectors]

    async def embed(self, texts: list[str]) -> EmbedResult:
        began = time.perf_counter()
        if sum(map(len, texts)) > _TOKENIZE_INLINE_CHARS:
            encoded = await asyncio.to_thread(self.encoder.encode, texts)
        else:
            encoded = self.encoder.encode(texts)
        submitted = time.perf_counter()
        rows = await self.batcher.submit(encoded)
        first = min(row.started for row in rows)
        timing = Timing(submitted - began, first - submitted, max(row.finished for row in rows) - first)
        embedded = [EmbeddedText(row.vector, e.truncated, len(e.ids)) for row, e in zip(rows, encoded, strict=True)]
        return EmbedResult(embedded, timing)
