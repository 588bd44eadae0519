"""The interface every embedding runtime implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class EmbeddingBackend(ABC):
    """Runs the exported graph: token ids and mask in, unit vectors out."""

    #: Runtime name reported by ListModels, e.g. "onnxruntime" or "triton".
    runtime: str
    #: Batches it can run at once (independent streams).
    concurrency: int = 1

    async def start(self) -> None:
        """Connect or load; raise BackendUnavailable when the runtime cannot be reached."""

    @abstractmethod
    async def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Embed a padded batch: int64 [batch, seq] inputs, float32 [batch, dimension] output."""

    async def close(self) -> None:
        """Release the runtime's resources."""
