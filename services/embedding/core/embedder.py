"""Tokenize, micro-batch and embed: the embedding service's core, free of gRPC."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from services.embedding.backends.base import EmbeddingBackend
from services.runtime.batching import BatchingConfig, MicroBatcher

# Above this many characters per request, tokenize off the event loop.
_TOKENIZE_INLINE_CHARS = 16_384


@dataclass(frozen=True)
class EncodedText:
    ids: np.ndarray  # int64 token ids, special tokens included
    truncated: bool


@dataclass(frozen=True)
class EmbeddedText:
    vector: np.ndarray  # float32, unit length
    truncated: bool
    token_count: int


class TextEncoder:
    """WordPiece tokenization with the model's truncation limit."""

    def __init__(self, tokenizer_path: Path, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_tokens)

    def encode(self, texts: list[str]) -> list[EncodedText]:
        return [
            EncodedText(np.asarray(e.ids, dtype=np.int64), truncated=bool(e.overflowing))
            for e in self.tokenizer.encode_batch(texts)
        ]


def pad_batch(encoded: list[EncodedText]) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest sequence in the batch: (input_ids, attention_mask)."""
    width = max(len(e.ids) for e in encoded)
    ids = np.zeros((len(encoded), width), dtype=np.int64)
    mask = np.zeros((len(encoded), width), dtype=np.int64)
    for row, e in enumerate(encoded):
        ids[row, : len(e.ids)] = e.ids
        mask[row, : len(e.ids)] = 1
    return ids, mask


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
