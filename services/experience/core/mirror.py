"""An in-memory mirror of one tenant's pool: what exact orchestration scans on every call.

The store stays the source of truth; the mirror is a cache of it, loaded on a tenant's first
use and kept up by this replica's writes and by catching up with other replicas' (see
``pool``). It is not thread-safe: the pool lets selections read it from worker threads only
while nothing writes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np

from kernels.bucketed_selection import CompactRows, compact
from services.experience.core.partition import Partition


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
    compact: CompactRows | None = None  # the vectors as int16 codes, for the selection's scan
    excluded: np.ndarray | None = None  # bool [n], rows held back from selection; None when none is
    excluded_count: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def selectable(self) -> int:
        return len(self.ids) - self.excluded_count

    def without(self, excluded: set[str]) -> PoolView:
        """A copy less the rows whose ids are in ``excluded``; for small views (the sublinear
        search's sample), never for a whole pool."""
        if not excluded:
            return self  # the common case; the test below is a Python pass over every id
        keep = np.fromiter((eid not in excluded for eid in self.ids), dtype=bool, count=len(self.ids))
        if keep.all():
            return self
        rows = self.compact
        return PoolView(
            [eid for eid, kept in zip(self.ids, keep, strict=True) if kept],
            self.vectors[keep],
            self.uncertainty[keep],
            self.complexity[keep],
            self.keys[keep],
            None if rows is None else CompactRows(rows.codes[keep], rows.scales[keep], rows.bounds[keep]),
        )


#: Rows compacted at once when the codes catch up with the vectors (bounds float64 memory).
COMPACT_BLOCK = 65_536

#: Bytes a mirror row costs beyond its arrays: its id string and its entry in ``row_of``.
ROW_OVERHEAD_BYTES = 160

#: Rows a pending partition places at a time (each step holds writes off for its length).
PLACEMENT_BLOCK = 32_768

#: Writes kept up in a sorted order one by one (O(n) each); after more, it is rebuilt on next use.
ORDER_UPDATES = 256


class SortedRows:
    """A mirror's rows sorted by one of its columns (ties in no particular order), built on first
    use and kept up through writes."""

    def __init__(self, descending: bool) -> None:
        self.sign = -1.0 if descending else 1.0
        self.rows: np.ndarray | None = None
        self._values: np.ndarray | None = None  # sign * column, in row order: ascending
        self._updates = 0

    def get(self, column: np.ndarray) -> np.ndarray:
        if self.rows is None:
            values = self.sign * column
            self.rows = np.argsort(values, kind="stable")
            self._values = values[self.rows]
            self._updates = 0
        return self.rows

    def _position(self, row: int, value: float) -> int:
        assert self.rows is not None and self._values is not None
        start = int(np.searchsorted(self._values, self.sign * value, side="left"))
        end = int(np.searchsorted(self._values, self.sign * value, side="right"))
        return start + int(np.flatnonzero(self.rows[start:end] == row)[0])

    def change(self, remove: tuple[int, float] | None, insert: tuple[int, float] | None) -> None:
        """Take a (row, value) out and/or put one in, or drop the order after many writes."""
        if self.rows is None:
            return
        self._updates += 1
        if self._updates > ORDER_UPDATES:
            self.rows = self._values = None
            return
        rows, values = self.rows, self._values
        assert values is not None
        if remove is not None:
            position = self._position(*remove)
            rows, values = np.delete(rows, position), np.delete(values, position)
        if insert is not None:
            row, value = insert
            position = int(np.searchsorted(values, self.sign * value, side="right"))
            rows, values = np.insert(rows, position, row), np.insert(values, position, self.sign * value)
        self.rows, self._values = rows, values

    def move(self, row: int, value: float, to: int) -> None:
        """The row's entry follows it to another row number."""
        if self.rows is not None:
            self.rows[self._position(row, value)] = to


class TenantMirror:
    """Growable arrays with O(1) upsert and delete (the last row moves into the hole), the
    vectors' int16 codes (caught up on the next view), and, once asked for, the rows most
    complex first and most certain first (the sublinear walks) and a k-means partition (the
    sublinear ends; kept up like the codes)."""

    def __init__(self, dimension: int, capacity: int = 1024) -> None:
        self.size = 0
        self.ids: list[str] = []
        self.row_of: dict[str, int] = {}
        self.vectors = np.zeros((capacity, dimension), dtype=np.float32)
        self.uncertainty = np.zeros(capacity)
        self.complexity = np.zeros(capacity)
        self.keys = np.zeros(capacity, dtype=np.int64)
        self.markers = np.zeros(capacity, dtype=np.int64)  # the change marker each row is at
        self.codes = np.zeros((capacity, dimension), dtype=np.int16)
        self.scales = np.zeros(capacity, dtype=np.float32)
        self.bounds = np.zeros(capacity, dtype=np.float32)
        self.excluded = np.zeros(capacity, dtype=np.bool_)
        self._excluded_ids: set[str] = set()
        self._stale: set[int] = set()  # rows whose codes lag their vector
        self._most_complex = SortedRows(descending=True)
        self._most_certain = SortedRows(descending=False)
        self.partition: Partition | None = None
        #: A partition being built: writes keep it up, as they do the live one, until it replaces it.
        self.pending: Partition | None = None

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (
            self.vectors, self.uncertainty, self.complexity, self.keys, self.markers,
            self.codes, self.scales, self.bounds, self.excluded,
        )

    @property
    def nbytes(self) -> int:
        """Resident bytes: the arrays at their capacity, and the ids."""
        return sum(a.nbytes for a in self._arrays()) + ROW_OVERHEAD_BYTES * self.size

    @staticmethod
    def row_bytes(dimension: int) -> int:
        """What one row costs, for sizing a tenant before it loads."""
        return dimension * 6 + 8 * 5 + 4 * 2 + 1 + ROW_OVERHEAD_BYTES

    def marker_of(self, experience_id: str) -> int | None:
        row = self.row_of.get(experience_id)
        return None if row is None else int(self.markers[row])

    def set_excluded(self, experience_ids: set[str]) -> None:
        """Hold back exactly these experiences (those not in the mirror are ignored)."""
        for eid in self._excluded_ids - experience_ids:
            if (row := self.row_of.get(eid)) is not None:
                self.excluded[row] = False
        for eid in experience_ids - self._excluded_ids:
            if (row := self.row_of.get(eid)) is not None:
                self.excluded[row] = True
        self._excluded_ids = set(experience_ids)

    @property
    def excluded_count(self) -> int:
        return sum(1 for eid in self._excluded_ids if eid in self.row_of)

    def most_complex_first(self) -> np.ndarray:
        return self._most_complex.get(self.complexity[: self.size])

    def most_certain_first(self) -> np.ndarray:
        return self._most_certain.get(self.uncertainty[: self.size])

    def _grow(self) -> None:
        capacity = 2 * len(self.keys)
        self.vectors = np.resize(self.vectors, (capacity, self.vectors.shape[1]))
        self.uncertainty = np.resize(self.uncertainty, capacity)
        self.complexity = np.resize(self.complexity, capacity)
        self.keys = np.resize(self.keys, capacity)
        self.markers = np.resize(self.markers, capacity)
        self.codes = np.resize(self.codes, (capacity, self.codes.shape[1]))
        self.scales = np.resize(self.scales, capacity)
        self.bounds = np.resize(self.bounds, capacity)
        self.excluded = np.resize(self.excluded, capacity)

    def upsert(
        self, experience_id: str, vector: np.ndarray, uncertainty: float, complexity: float, marker: int = 0
    ) -> None:
        row = self.row_of.get(experience_id)
        if row is None:
            if self.size == len(self.keys):
                self._grow()
            row = self.size
            self.size += 1
            self.ids.append(experience_id)
            self.row_of[experience_id] = row
            self.keys[row] = tie_key(experience_id)
            self.excluded[row] = experience_id in self._excluded_ids
            self._most_complex.change(None, (row, complexity))
            self._most_certain.change(None, (row, uncertainty))
        else:
            if self.complexity[row] != complexity:
                self._most_complex.change((row, float(self.complexity[row])), (row, complexity))
            if self.uncertainty[row] != uncertainty:
                self._most_certain.change((row, float(self.uncertainty[row])), (row, uncertainty))
        self.vectors[row] = vector
        self.uncertainty[row] = uncertainty
        self.complexity[row] = complexity
        self.markers[row] = marker
        self._stale.add(row)

    def remove(self, experience_id: str) -> None:
        row = self.row_of.pop(experience_id, None)
        if row is None:
            return
        last = self.size - 1
        self._most_complex.change((row, float(self.complexity[row])), None)
        self._most_certain.change((row, float(self.uncertainty[row])), None)
        for partition in (self.partition, self.pending):
            if partition is not None:
                partition.remove(row, last)
        if row != last:
            self._most_complex.move(last, float(self.complexity[last]), row)
            self._most_certain.move(last, float(self.uncertainty[last]), row)
            moved = self.ids[last]
            self.ids[row] = moved
            self.row_of[moved] = row
            for array in self._arrays():
                array[row] = array[last]
            if last in self._stale:
                self._stale.add(row)
        self._stale.discard(last)
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

    def catch_up(self) -> None:
        """Bring the codes and clusters of every written row up to date."""
        stale = np.fromiter(sorted(self._stale), dtype=np.int64, count=len(self._stale))
        for start in range(0, len(stale), COMPACT_BLOCK):
            rows = stale[start : start + COMPACT_BLOCK]
            block = compact(self.vectors[rows])
            self.codes[rows], self.scales[rows], self.bounds[rows] = block.codes, block.scales, block.bounds
        for partition in (self.partition, self.pending):
            if partition is not None:
                partition.place(stale, self.vectors[stale])
        self._stale.clear()

    def partition_due(self) -> bool:
        """Whether the pool needs a (new) partition: none yet, or grown fourfold since."""
        return self.size > 0 and (self.partition is None or self.partition.needs_retraining(self.size))

    def training_rows(self, seed: int = 0) -> np.ndarray:
        """A copy of the rows a new partition's k-means trains on."""
        return self.vectors[Partition.training_rows(self.size, seed)]

    def place_pending(self, start: int) -> int:
        """Place the next block of rows from ``start`` in the pending partition; where the next
        block starts (``size`` when done)."""
        assert self.pending is not None
        stop = min(self.size, start + PLACEMENT_BLOCK)
        if start < stop:
            rows = np.arange(start, stop)
            self.pending.place(rows, self.vectors[start:stop])
        return stop

    def adopt_pending(self) -> None:
        """Place the rows the walk missed (moved behind it by deletes), and switch to the pending
        partition."""
        assert self.pending is not None
        pending = self.pending
        known = pending.cluster_of[: self.size] if len(pending.cluster_of) >= self.size else None
        missing = np.arange(self.size) if known is None else np.flatnonzero(known < 0)
        if len(missing):
            pending.place(missing, self.vectors[missing])
        self.partition, self.pending = pending, None

    def view(self) -> PoolView:
        """Views, not copies, of a caught-up mirror: valid while nothing writes to it."""
        assert not self._stale, "the mirror's codes lag its rows: writers catch up before they let go"
        n = self.size
        rows = CompactRows(self.codes[:n], self.scales[:n], self.bounds[:n])
        excluded = self.excluded_count
        return PoolView(
            self.ids,
            self.vectors[:n],
            self.uncertainty[:n],
            self.complexity[:n],
            self.keys[:n],
            rows,
            self.excluded[:n] if excluded else None,
            excluded,
        )
