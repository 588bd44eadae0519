"""What the multi-label service needs from the world: sentence vectors and its trained models."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from services.multilabel.core.bundle import StoredMultiLabelModel


class TextEmbedder(Protocol):
    async def embed(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), dimension] unit vectors; raises BackendUnavailable when it cannot."""
        ...


class ModelStore(Protocol):
    def has(self, name: str) -> bool:
        """Whether a complete version of model ``name`` is there to load."""
        ...

    def load_all(self) -> dict[str, dict[str, StoredMultiLabelModel]]:
        """name → version → model."""
        ...
