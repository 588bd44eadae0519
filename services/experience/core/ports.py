"""The ports of the experience core: the store every backend implements, and the embedder.

The interface every experience store implements:

Stores are synchronous and thread-safe; the service calls them from worker threads (or, for
stores with ``quick_reads``, reads a few points on its event loop).
Every method takes the tenant explicitly and must never return another tenant's data:
isolation is enforced here, not by the caller's filters.

Every write carries a change marker (an integer, microseconds on the writer's clock, increasing
per experience). A ``shared`` store, one that several replicas write to, keeps deletes as
tombstones with their marker, and hands out every change since a marker in marker order: that is
how each replica's mirror catches up with the others' writes.
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
    marker: int = 0  # the change marker of the write that stored it


@dataclass(frozen=True)
class Version:
    """What the store holds under one id: the live experience, or a tombstone (None)."""

    marker: int
    experience: Experience | None


@dataclass(frozen=True)
class Change:
    """One write as a shared store hands it out: the point as stored, or a delete."""

    tenant: str
    experience_id: str
    marker: int
    point: StoredPoint | None  # None: deleted


class ExperienceStore(ABC):
    #: Reported by Stats, e.g. "qdrant-edge" or "qdrant".
    backend_name: str
    #: True where several replicas may write to the store: deletes leave tombstones and
    #: ``changes`` is served.
    shared: bool = False
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
    def versions(self, tenant: str, experience_ids: Sequence[str]) -> dict[str, Version]:
        """What the store holds under each of ``experience_ids`` that it knows, tombstones included."""

    @abstractmethod
    def delete(self, tenant: str, experience_id: str, marker: int) -> bool:
        """Remove one experience (leaving a tombstone with ``marker`` in a shared store);
        False when it did not exist."""

    @abstractmethod
    def page(self, tenant: str, after_id: str | None, limit: int) -> list[Experience]:
        """Up to ``limit`` experiences with id > ``after_id``, ordered by id."""

    @abstractmethod
    def count(self, tenant: str) -> int: ...

    @abstractmethod
    def scroll(self, tenant: str | None = None, batch_size: int = 1024) -> Iterator[StoredPoint]:
        """Every point of ``tenant`` (or of all tenants), vectors included, in batches."""

    def changes(self, tenants: Sequence[str], since: int, limit: int) -> list[Change]:
        """Up to ``limit`` changes of ``tenants`` with marker >= ``since``, in marker order."""
        raise NotImplementedError(f"{self.backend_name} is single-node: it has no changes to follow")

    def purge_tombstones(self, before: int) -> int:
        """Drop tombstones with marker < ``before``; how many went. Single-node stores keep none."""
        return 0

    def indexed_count(self, tenant: str) -> int:
        """Points covered by an approximate (HNSW) index; exact-search stores report 0."""
        return 0

    def close(self) -> None:
        """Flush and release the engine."""
