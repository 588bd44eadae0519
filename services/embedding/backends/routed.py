"""Two runtimes behind one tier: each batch goes to the one measured faster for its size."""

from __future__ import annotations

import numpy as np

from services.embedding.core.ports import EmbeddingBackend


class RoutedBySize(EmbeddingBackend):
    """Batches of at most ``small_rows`` rows run on ``small`` (the lower fixed cost per call: a
    lone question's latency), larger ones on ``large`` (the higher throughput per row)."""

    def __init__(self, small: EmbeddingBackend, large: EmbeddingBackend, small_rows: int) -> None:
        self.small, self.large, self.small_rows = small, large, small_rows
        self.runtime = f"{large.runtime}+{small.runtime}"
        self.concurrency = min(small.concurrency, large.concurrency)

    async def start(self) -> None:
        await self.small.start()
        await self.large.start()

    async def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        backend = self.small if len(input_ids) <= self.small_rows else self.large
        return await backend.infer(input_ids, attention_mask)

    async def close(self) -> None:
        await self.large.close()
        await self.small.close()
