"""An in-memory mirror of each tenant's pool: what exact orchestration scans on every call.

The store stays the source of truth; the mirror is rebuilt from it at start and updated
after every acknowledged write, so Orchestrate sees a write as soon as Record returns.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np


def tie_key(experience_id: str) -> int:
    """A stable integer per experience for breaking exact ties identically in every process."""
    return uuid.UUID(experience_id).int >> 65  # fits in int64


@dataclass(frozen=True)
class PoolView:
    """Arrays over one tenant's pool at one moment, index-aligned."""

    ids: list[str]
    vectors: np.ndarray  # float32 [n, dimension]
    uncertainty: np.ndarray  # float64 [n]
    complexity: np.ndarray  # float64 [n]
    keys: np.ndarray  # int64 [n]

    def __len__(self) -> int:
        return len(self.ids)

    def without(self, excluded: set[str]) -> PoolView:
        """The view less the rows whose ids are in ``excluded`` (quarantined experiences)."""
        keep = np.fromiter((eid not in excluded for eid in self.ids), dtype=bool, count=len(self.ids))
        if keep.all():
            return self
        return PoolView(
            [eid for eid, kept in zip(self.ids, keep, strict=True) if kept],
            self.vectors[keep],
            self.uncertainty[keep],
            self.complexity[keep],
            self.keys[keep],
        )

    def similarity(self, query: np.ndarray) -> np.ndarray:
        """Cosine of every row to the unit ``query``. numpy's float32 matrix-vector product: on
        this 2-core machine torch.mv measured 2.7x slower at 100k rows and 3.3x at 1M."""
        return self.vectors @ query


class TenantMirror:
    """Growable arrays with O(1) upsert and delete (the last row moves into the hole)."""

    def __init__(self, dimension: int, capacity: int = 1024) -> None:
        self.size = 0
        self.ids: list[str] = []
        self.row_of: dict[str, int] = {}
        self.vectors = np.zeros((capacity, dimension), dtype=np.float32)
        self.uncertainty = np.zeros(capacity)
        self.complexity = np.zeros(capacity)
        self.keys = np.zeros(capacity, dtype=np.int64)

    def _grow(self) -> None:
        capacity = 2 * len(self.keys)
        self.vectors = np.resize(self.vectors, (capacity, self.vectors.shape[1]))
        self.uncertainty = np.resize(self.uncertainty, capacity)
        self.complexity = np.resize(self.complexity, capacity)
        self.keys = np.resize(self.keys, capacity)

    def upsert(self, experience_id: str, vector: np.ndarray, uncertainty: float, complexity: float) -> None:
        row = self.row_of.get(experience_id)
        if row is None:
            if self.size == len(self.keys):
                self._grow()
            row = self.size
            self.size += 1
            self.ids.append(experience_id)
            self.row_of[experience_id] = row
            self.keys[row] = tie_key(experience_id)
        self.vectors[row] = vector
        self.uncertainty[row] = uncertainty
        self.complexity[row] = complexity

    def remove(self, experience_id: str) -> None:
        row = self.row_of.pop(experience_id, None)
        if row is None:
            return
        last = self.size - 1
        if row != last:
            moved = self.ids[last]
            self.ids[row] = moved
            self.row_of[moved] = row
            for array in (self.vectors, self.uncertainty, self.complexity, self.keys):
                array[row] = array[last]
        self.ids.pop()
        self.size = last

    def sample(self, size: int, rng: np.random.Generator) -> PoolView:
        """A uniform sample of at most ``size`` rows, copied (it outlives the event-loop step)."""
        rows = np.sort(rng.choice(self.size, size=min(size, self.size), replace=False))
        return PoolView(
            [self.ids[r] for r in rows],
            self.vectors[rows],
            self.uncertainty[rows],
            self.complexity[rows],
            self.keys[rows],
        )

    def vectors_of(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The vectors of ``ids`` still in the pool, and which of ``ids`` those are."""
        rows = [self.row_of.get(i, -1) for i in ids]
        found = np.array([r >= 0 for r in rows], dtype=bool)
        return self.vectors[[r for r in rows if r >= 0]], found

    def view(self) -> PoolView:
        """Views, not copies: take it and use it within one step of the event loop."""
        n = self.size
        return PoolView(
            self.ids, self.vectors[:n], self.uncertainty[:n], self.complexity[:n], self.keys[:n]
        )
