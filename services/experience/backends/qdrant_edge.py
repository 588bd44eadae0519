"""The experience store on qdrant-edge: Qdrant's Rust engine inside this process.

Layout of ``data_dir``: ``CURRENT`` names the live shard directory (``shard-NNNNNN``), which
holds every tenant. Upserts land in that shard's WAL before they return.

The engine is single-node: one replica owns the data directory, so deletes remove points
outright and there are no changes to follow. It builds no HNSW index: the service searches its
own mirror of each tenant, and qdrant-edge 0.9 would keep the GIL for the whole of an index
build (about 100 s for 100k points).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from services.experience.backends.payload import (
    TENANT,
    from_payload,
    marker_of,
    page_after,
    page_offset,
    point_id,
    point_ids,
    scroll_pages,
    to_payload,
    vector_values,
)
from services.experience.core.experience import Experience
from services.experience.core.ports import ExperienceStore, StoredPoint, Version

_CURRENT = "CURRENT"


def _shard_config(dimension: int) -> qe.EdgeConfig:
    return qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine))


def _create_shard(path: Path, dimension: int) -> qe.EdgeShard:
    shard = qe.EdgeShard.create(str(path), _shard_config(dimension))
    shard.update(qe.UpdateOperation.create_field_index(TENANT, qe.PayloadSchemaType.Keyword))
    return shard


def _tenant_filter(tenant: str, *conditions: qe.FieldCondition | qe.HasIdCondition) -> qe.Filter:
    return qe.Filter(must=[qe.FieldCondition(TENANT, match=qe.MatchValue(tenant)), *conditions])


def _experience(record: qe.Record) -> Experience:
    assert record.payload is not None
    return from_payload(record.id, record.payload)


def _stored(record: qe.Record) -> StoredPoint:
    assert record.payload is not None
    return StoredPoint(_experience(record), np.asarray(record.vector, dtype=np.float32), marker_of(record.payload))


class QdrantEdgeStore(ExperienceStore):
    backend_name = "qdrant-edge"
    quick_reads = True  # in process: reading eight points measured 0.46 ms, the thread hop 0.8 ms

    def __init__(self, data_dir: Path, dimension: int) -> None:
        """Open (or create) the store in ``data_dir``; one process at a time may own it."""
        super().__init__(dimension)
        self.data_dir = Path(data_dir)
        # qdrant-edge keeps the GIL in every call, so this lock costs no parallelism; it makes
        # a delete's check and removal one step.
        self._lock = threading.Lock()
        self._closed = False
        self._shard = self._open()

    def upsert(self, points: Sequence[StoredPoint]) -> None:
        if not points:
            return
        operation = qe.UpdateOperation.upsert_points(
            [
                qe.Point(p.experience.id, vector_values(p.vector, self.dimension), to_payload(p.experience, p.marker))
                for p in points
            ]
        )
        with self._lock:
            self._shard.update(operation)

    def get(self, tenant: str, experience_id: str) -> Experience | None:
        return next(iter(self.get_many(tenant, [experience_id]).values()), None)

    def get_many(self, tenant: str, experience_ids: Sequence[str]) -> dict[str, Experience]:
        return {eid: v.experience for eid, v in self.versions(tenant, experience_ids).items() if v.experience}

    def versions(self, tenant: str, experience_ids: Sequence[str]) -> dict[str, Version]:
        ids = point_ids(experience_ids)
        if not ids:
            return {}
        request = qe.ScrollRequest(
            limit=len(ids), filter=_tenant_filter(tenant, qe.HasIdCondition(set(ids))), with_payload=True
        )
        records, _ = self._scroll(request)
        return {str(r.id): Version(marker_of(r.payload or {}), _experience(r)) for r in records}

    def delete(self, tenant: str, experience_id: str, marker: int) -> bool:
        pid = point_id(experience_id)
        if pid is None:
            return False
        with self._lock:
            owned = qe.CountRequest(filter=_tenant_filter(tenant, qe.HasIdCondition({pid})))
            if self._shard.count(owned) == 0:
                return False
            self._shard.update(qe.UpdateOperation.delete_points([pid]))
        return True

    def page(self, tenant: str, after_id: str | None, limit: int) -> list[Experience]:
        if limit <= 0:
            return []
        offset = page_offset(after_id)
        request = qe.ScrollRequest(
            offset=offset, limit=limit + 1, filter=_tenant_filter(tenant), with_payload=True
        )
        records, _ = self._scroll(request)
        return page_after([(str(r.id), _experience(r)) for r in records], offset, limit)

    def count(self, tenant: str) -> int:
        with self._lock:
            return self._shard.count(qe.CountRequest(filter=_tenant_filter(tenant)))

    def scroll(self, tenant: str | None = None, batch_size: int = 1024) -> Iterator[StoredPoint]:
        where = None if tenant is None else _tenant_filter(tenant)

        def fetch(offset: Any) -> tuple[list[StoredPoint], Any]:
            request = qe.ScrollRequest(
                offset=offset, limit=batch_size, filter=where, with_payload=True, with_vector=True
            )
            records, next_offset = self._scroll(request)
            return [_stored(r) for r in records], next_offset

        return scroll_pages(fetch)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._shard.flush()
            self._shard.close()

    def _open(self) -> qe.EdgeShard:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        current = self.data_dir / _CURRENT
        if not current.exists():
            shard = _create_shard(self.data_dir / "shard-000000", self.dimension)
            self._set_current("shard-000000")
            return shard
        # Loading first: the engine's WAL lock fails it while another process owns the store.
        live = current.read_text().strip()
        shard = qe.EdgeShard.load(str(self.data_dir / live), _shard_config(self.dimension))
        # Any other shard or build is what an index build of an earlier version left behind.
        for path in self.data_dir.iterdir():
            if path.is_dir() and path.name.startswith(("shard-", "build-")) and path.name != live:
                shutil.rmtree(path)
        return shard

    def _set_current(self, name: str) -> None:
        """Point CURRENT at a shard directory, atomically and durably."""
        staged = self.data_dir / f"{_CURRENT}.tmp"
        with open(staged, "w") as f:
            f.write(name)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staged, self.data_dir / _CURRENT)
        directory = os.open(self.data_dir, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _scroll(self, request: qe.ScrollRequest) -> tuple[list[qe.Record], Any]:
        with self._lock:
            return self._shard.scroll(request)
