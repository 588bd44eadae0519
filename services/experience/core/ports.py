"""The ports of the experience core: the store every backend implements, and the embedder.

The interface every experience store implements:

Stores are synchronous and thread-safe; the service calls them from worker threads (or, for
stores with ``quick_reads``, reads a few points on its event loop).
Every method takes the tenant explicitly and must never return another tenant's data:
isolation is enforced here, not by the caller's filters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from services.experience.core.experience import Experience

#: Texts in, float32 unit vectors [len(texts), dimension] out; raises BackendUnavailable when it cannot.
Embed = Callable[[list[str]], Awaitable[np.ndarray]]


@dataclass(frozen=True)
class StoredPoint:
    experience: Experience
    vector: np.ndarray  # float32 [dimension], unit length


@dataclass(frozen=True)
class ScoredExperience:
    experience: Experience
    score: float  # cosine similarity to the query vector


class ExperienceStore(ABC):
    #: Reported by Stats, e.g. "qdrant-edge" or "qdrant".
    backend_name: str
    #: True where a read of a few points returns in well under a millisecond in this process
    #: (and keeps the GIL anyway): callers on an event loop may skip the worker-thread hop,
    #: which costs more than the read on a small machine.
    quick_reads: bool = False

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension

    @abstractmethod
    def upsert(self, points: Sequence[StoredPoint]) -> None:
        """Insert or replace points by experience id; durable (in the WAL) when this returns."""

    @abstractmethod
    def get(self, tenant: str, experience_id: str) -> Experience | None: ...

    @abstractmethod
    def get_many(self, tenant: str, experience_ids: Sequence[str]) -> dict[str, Experience]:
        """The experiences among ``experience_ids`` that exist for ``tenant``."""

    @abstractmethod
    def delete(self, tenant: str, experience_id: str) -> bool:
        """Remove one experience; False when it did not exist."""

    @abstractmethod
    def page(self, tenant: str, after_id: str | None, limit: int) -> list[Experience]:
        """Up to ``limit`` experiences with id > ``after_id``, ordered by id."""

    @abstractmethod
    def count(self, tenant: str) -> int: ...

    @abstractmethod
    def scroll(self, tenant: str | None = None, batch_size: int = 1024) -> Iterator[StoredPoint]:
        """Every point of ``tenant`` (or of all tenants), vectors included, in batches."""

    @abstractmethod
    def search(
        self, tenant: str, vector: np.ndarray, limit: int, score_threshold: float | None = None
    ) -> list[ScoredExperience]:
        """The ``limit`` experiences most similar to ``vector`` (cosine), best first; with
        ``score_threshold``, only those scoring at least that. Pass ``-vector`` for the least similar."""

    def indexed_count(self, tenant: str) -> int:
        """Points covered by an approximate (HNSW) index; exact-search stores report 0."""
        return 0

    def close(self) -> None:
        """Flush and release the engine."""
