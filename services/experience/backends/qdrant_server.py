"""The experience store on a Qdrant server, through qdrant-client (gRPC).

``QdrantClient(":memory:")`` (qdrant-client's local mode) runs the same calls for tests,
order_by included. It searches by brute force, ignores payload indexes (warning on each) and
HNSW settings, and is not thread-safe: in that mode only, this store skips the index calls,
serialises its calls and reports no indexed points.

The store is shared: every replica of the service writes to it. Deletes leave a tombstone (the
point, flagged, with its vector replaced) until ``purge_tombstones``; every read but
``versions`` and ``changes`` leaves tombstones out. Replicas follow each other's writes through
``changes``, a scroll ordered by the indexed change marker. Writes wait for the server
(``wait=True``, strong ordering) and change reads ask a majority of a shard's replicas, so a
write a replica acknowledged is in every later catch-up.

A circuit breaker guards the server: a transport failure (UNAVAILABLE or DEADLINE_EXCEEDED over
gRPC, no connection or no answer over HTTP) becomes BackendUnavailable, and after repeated ones
calls fail at once (CircuitOpen) until a trial call succeeds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import grpc
import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException

from services.common.breaker import CircuitBreaker
from services.common.errors import BackendUnavailable
from services.experience.backends.payload import (
    DELETED,
    MARKER,
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
from services.experience.core.ports import Change, ExperienceStore, StoredPoint, Version

# is_tenant keeps each tenant's points together on disk, as Qdrant's multitenancy guide advises;
# order_by needs a range index on the marker.
_INDEXES: dict[str, qm.PayloadSchemaType | qm.KeywordIndexParams | qm.IntegerIndexParams] = {
    TENANT: qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, is_tenant=True),
    MARKER: qm.IntegerIndexParams(type=qm.IntegerIndexType.INTEGER, lookup=False, range=True),
    DELETED: qm.PayloadSchemaType.BOOL,
}
_DELETED = qm.FieldCondition(key=DELETED, match=qm.MatchValue(value=True))


def _tenant_filter(
    tenant: str, *conditions: qm.FieldCondition | qm.HasIdCondition, tombstones: bool = False
) -> qm.Filter:
    """The tenant's points meeting ``conditions``: live ones only, unless ``tombstones``."""
    return qm.Filter(
        must=[qm.FieldCondition(key=TENANT, match=qm.MatchValue(value=tenant)), *conditions],
        must_not=None if tombstones else [_DELETED],
    )


def _has_ids(ids: Sequence[str]) -> qm.HasIdCondition:
    return qm.HasIdCondition(has_id=list(ids))


def _experience(point: qm.Record | qm.ScoredPoint) -> Experience:
    assert point.payload is not None
    return from_payload(point.id, point.payload)


def _stored(record: qm.Record) -> StoredPoint:
    assert record.payload is not None
    return StoredPoint(_experience(record), np.asarray(record.vector, dtype=np.float32), marker_of(record.payload))


def _is_tombstone(record: qm.Record) -> bool:
    return bool(record.payload and record.payload.get(DELETED))


def _unreachable(exc: Exception) -> bool:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return isinstance(exc, ResponseHandlingException)  # qdrant-client's HTTP transport failure


class QdrantServerStore(ExperienceStore):
    backend_name = "qdrant"
    shared = True

    def __init__(
        self,
        client: QdrantClient,
        dimension: int,
        *,
        collection: str = "rosemesh_experiences",
        breaker: CircuitBreaker | None = None,
    ) -> None:
        """Use ``collection``, creating it (cosine, tenant-partitioned HNSW, payload indexes) if missing."""
        super().__init__(dimension)
        self.client = client
        self.collection = collection
        options = client.init_options
        self._local = options.get("location") == ":memory:" or options.get("path") is not None
        # A majority of each shard's replicas: a write acknowledged with wait=True is among them.
        self._read_consistency = None if self._local else qm.ReadConsistencyType.MAJORITY
        self._serial: AbstractContextManager[Any] = threading.Lock() if self._local else nullcontext()
        self.breaker = breaker or CircuitBreaker(f"qdrant {options.get('url') or options.get('location')}")
        if not client.collection_exists(collection):
            client.create_collection(
                collection,
                vectors_config=qm.VectorParams(size=dimension, distance=qm.Distance.COSINE),
                # Qdrant's multitenancy layout: one HNSW graph per tenant, none across tenants,
                # since every search filters on the tenant.
                hnsw_config=qm.HnswConfigDiff(m=0, payload_m=16),
            )
        info = client.get_collection(collection)
        vectors = info.config.params.vectors
        if not isinstance(vectors, qm.VectorParams) or vectors.size != dimension:
            raise ValueError(f"collection {collection!r} does not hold one {dimension}-d vector per point")
        if not self._local:
            for field, schema in _INDEXES.items():
                if field not in info.payload_schema:
                    client.create_payload_index(collection, field, schema, wait=True)

    @classmethod
    def from_url(cls, url: str, dimension: int, api_key: str | None = None, **kw: Any) -> QdrantServerStore:
        """A store on the server at ``url`` over gRPC; ``kw`` goes to the constructor (``collection``)."""
        return cls(QdrantClient(url=url, api_key=api_key, prefer_grpc=True), dimension, **kw)

    @contextmanager
    def _server(self) -> Iterator[None]:
        """One call to the server: serialised in local mode, guarded by the breaker."""
        with self._serial, self.breaker.guard():
            try:
                yield
            except Exception as exc:
                if _unreachable(exc):
                    raise BackendUnavailable(f"Qdrant at {self.client.init_options.get('url')}: {exc}") from exc
                raise

    def upsert(self, points: Sequence[StoredPoint]) -> None:
        if not points:
            return
        structs = [
            qm.PointStruct(
                id=p.experience.id,
                vector=vector_values(p.vector, self.dimension),
                payload=to_payload(p.experience, p.marker),
            )
            for p in points
        ]
        self._write(structs)

    def _write(self, structs: list[qm.PointStruct]) -> None:
        with self._server():
            self.client.upsert(self.collection, structs, wait=True, ordering=qm.WriteOrdering.STRONG)

    def get(self, tenant: str, experience_id: str) -> Experience | None:
        return next(iter(self.get_many(tenant, [experience_id]).values()), None)

    def get_many(self, tenant: str, experience_ids: Sequence[str]) -> dict[str, Experience]:
        ids = point_ids(experience_ids)
        if not ids:
            return {}
        records, _ = self._scroll(where=_tenant_filter(tenant, _has_ids(ids)), limit=len(ids))
        return {e.id: e for e in map(_experience, records)}

    def versions(self, tenant: str, experience_ids: Sequence[str]) -> dict[str, Version]:
        ids = point_ids(experience_ids)
        if not ids:
            return {}
        records, _ = self._scroll(where=_tenant_filter(tenant, _has_ids(ids), tombstones=True), limit=len(ids))
        return {
            str(r.id): Version(marker_of(r.payload or {}), None if _is_tombstone(r) else _experience(r))
            for r in records
        }

    def delete(self, tenant: str, experience_id: str, marker: int) -> bool:
        """True when a live point existed for ``tenant`` just before: a server has no
        delete-and-report, so this counts, then writes the tombstone over it."""
        pid = point_id(experience_id)
        if pid is None:
            return False
        with self._server():
            live = self.client.count(self.collection, count_filter=_tenant_filter(tenant, _has_ids([pid])), exact=True)
        if live.count == 0:
            return False
        tombstone = np.zeros(self.dimension, dtype=np.float32)
        tombstone[0] = 1.0  # cosine needs a non-zero vector; no read ranks tombstones
        self._write([qm.PointStruct(id=pid, vector=tombstone.tolist(), payload={TENANT: tenant, MARKER: marker, DELETED: True})])
        return True

    def changes(self, tenants: Sequence[str], since: int, limit: int) -> list[Change]:
        if not tenants or limit <= 0:
            return []
        where = qm.Filter(must=[qm.FieldCondition(key=TENANT, match=qm.MatchAny(any=list(tenants)))])
        order = qm.OrderBy(key=MARKER, direction=qm.Direction.ASC, start_from=since)
        records, _ = self._scroll(
            where=where, limit=limit, order_by=order, with_vectors=True, consistency=self._read_consistency
        )
        changes = []
        for r in records:
            payload = r.payload or {}
            point = None if _is_tombstone(r) else _stored(r)
            changes.append(Change(str(payload[TENANT]), str(r.id), marker_of(payload), point))
        return changes

    def purge_tombstones(self, before: int) -> int:
        old = qm.Filter(must=[_DELETED, qm.FieldCondition(key=MARKER, range=qm.Range(lt=before))])
        with self._server():
            count = self.client.count(self.collection, count_filter=old, exact=True).count
            if count:
                self.client.delete(self.collection, qm.FilterSelector(filter=old), wait=True)
        return count

    def page(self, tenant: str, after_id: str | None, limit: int) -> list[Experience]:
        if limit <= 0:
            return []
        offset = page_offset(after_id)
        records, _ = self._scroll(where=_tenant_filter(tenant), limit=limit + 1, offset=offset)
        return page_after([(str(r.id), _experience(r)) for r in records], offset, limit)

    def count(self, tenant: str) -> int:
        with self._server():
            return self.client.count(self.collection, count_filter=_tenant_filter(tenant), exact=True).count

    def scroll(self, tenant: str | None = None, batch_size: int = 1024) -> Iterator[StoredPoint]:
        where = qm.Filter(must_not=[_DELETED]) if tenant is None else _tenant_filter(tenant)

        def fetch(offset: Any) -> tuple[list[StoredPoint], Any]:
            records, next_offset = self._scroll(
                where=where, limit=batch_size, offset=offset, with_vectors=True
            )
            return [_stored(r) for r in records], next_offset

        return scroll_pages(fetch)

    def indexed_count(self, tenant: str) -> int:
        """An estimate: the server reports indexed vectors per collection, not per tenant, so
        this applies the collection's indexed share to the tenant. Local mode indexes nothing."""
        if self._local:
            return 0
        with self._server():
            info = self.client.get_collection(self.collection)
        points, indexed = info.points_count or 0, info.indexed_vectors_count or 0
        owned = self.count(tenant)
        return min(owned, owned * indexed // points) if points else 0

    def close(self) -> None:
        self.client.close()

    def _scroll(
        self, *, where: qm.Filter | None, limit: int, **kw: Any
    ) -> tuple[list[qm.Record], Any]:
        kw.setdefault("with_payload", True)
        with self._server():
            return self.client.scroll(self.collection, scroll_filter=where, limit=limit, **kw)
