"""What the multi-label service needs from the world: sentence vectors and its trained models."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from services.multilabel.core.bundle import ServedModel


class TextEmbedder(Protocol):
    async def embed(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), dimension] unit vectors; raises BackendUnavailable when it cannot."""
        ...


class ModelStore(Protocol):
    def resolve(self, name: str, pinned: str | None = None) -> str | None:
        """The version of ``name`` to serve (``pinned``, else the current one); None until published."""
        ...

    def load(self, pins: dict[str, str]) -> dict[str, ServedModel]:
        """Every published model, each with every version and the one it serves by default."""
        ...
