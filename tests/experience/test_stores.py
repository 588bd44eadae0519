"""One contract for every experience store: qdrant-edge in a temporary directory, qdrant-client's
local mode, and a real Qdrant server when QDRANT_URL is set; then what only the shared (server)
store does: tombstones and the change feed."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from services.experience.backends.qdrant_edge import QdrantEdgeStore
from services.experience.backends.qdrant_server import QdrantServerStore
from services.experience.core.experience import Experience, experience_id
from services.experience.core.ports import Change, ExperienceStore, StoredPoint, Version

DIM = 384
ACME, GLOBEX, NOBODY = "acme", "globex", "initech"
# Few distinct values, so that many points tie: order_by paging must neither repeat nor lose them.
UNCERTAINTIES = (0.0, 0.5, 0.69, 1.1)
COMPLEXITIES = (1.0, 2.0, 2.5, 3.0, 4.0)
# The pool's change markers interleave the tenants: acme's are even, globex's odd.
ACME_MARKERS = range(10, 10 + 2 * 120, 2)
GLOBEX_MARKERS = range(11, 11 + 2 * 40, 2)
LATER = 10_000  # after every marker in the pool


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_points(
    tenant: str, vectors: np.ndarray, rng: np.random.Generator, markers: Iterable[int] | None = None
) -> list[StoredPoint]:
    points = []
    for i, (vector, marker) in enumerate(zip(vectors, markers or range(1, len(vectors) + 1), strict=True)):
        question = f"{tenant} question {i}?"
        experience = Experience(
            id=experience_id(tenant, question),
            tenant=tenant,
            question=question,
            reasoning=f"step one\nstep two\nso {i}",
            answer=str(i),
            uncertainty=float(rng.choice(UNCERTAINTIES)),
            complexity=float(rng.choice(COMPLEXITIES)),
            path_count=5,
            majority_count=int(rng.integers(1, 6)),
            create_time=1_700_000_000.0 + i,
            update_time=1_700_000_000.5 + i,
        )
        points.append(StoredPoint(experience, vector, marker))
    return points


def assert_same_point(got: StoredPoint | None, expected: StoredPoint) -> None:
    assert got is not None
    assert (got.experience, got.marker) == (expected.experience, expected.marker)
    assert got.vector.dtype == np.float32 and got.vector.shape == (DIM,)
    np.testing.assert_allclose(got.vector, expected.vector, atol=1e-6)


@dataclass
class Pool:
    points: dict[str, list[StoredPoint]]  # by tenant

    def by_id(self, tenant: str) -> dict[str, StoredPoint]:
        return {p.experience.id: p for p in self.points[tenant]}


def open_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> ExperienceStore:
    if kind == "qdrant-edge":
        return QdrantEdgeStore(tmp_path / "pool", DIM)
    if kind == "qdrant-local":
        return QdrantServerStore(QdrantClient(":memory:"), DIM)
    url = os.environ.get("QDRANT_URL")
    if not url:
        pytest.skip("QDRANT_URL is not set")
    collection = f"test_{uuid.uuid4().hex}"
    server = QdrantServerStore.from_url(url, DIM, os.environ.get("QDRANT_API_KEY"), collection=collection)
    request.addfinalizer(lambda: server.client.delete_collection(collection))
    return server


@pytest.fixture(params=["qdrant-edge", "qdrant-local", "qdrant-server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ExperienceStore]:
    opened = open_store(request.param, request, tmp_path)
    yield opened
    opened.close()


def filled(store: ExperienceStore, seed: int) -> Pool:
    """120 of ACME's experiences and 40 of GLOBEX's, stored in two writes."""
    rng = np.random.default_rng(seed)
    points = {
        ACME: make_points(ACME, unit_vectors(rng, 120), rng, ACME_MARKERS),
        GLOBEX: make_points(GLOBEX, unit_vectors(rng, 40), rng, GLOBEX_MARKERS),
    }
    store.upsert(points[ACME][:60])
    store.upsert(points[ACME][60:] + points[GLOBEX])
    return Pool(points)


@pytest.fixture
def pool(store: ExperienceStore) -> Pool:
    return filled(store, 7)


def test_get_returns_every_field(store: ExperienceStore, pool: Pool) -> None:
    for point in pool.points[ACME][:10]:
        assert store.get(ACME, point.experience.id) == point.experience
    assert store.get(ACME, experience_id(ACME, "never asked")) is None
    assert store.get(ACME, "not-a-uuid") is None


def test_get_many_returns_the_tenants_existing_ids(store: ExperienceStore, pool: Pool) -> None:
    mine = [p.experience for p in pool.points[ACME][5:8]]
    theirs = pool.points[GLOBEX][0].experience.id
    asked = [e.id for e in mine] + [theirs, experience_id(ACME, "never asked"), "not-a-uuid", mine[0].id]
    assert store.get_many(ACME, asked) == {e.id: e for e in mine}
    assert store.get_many(ACME, []) == {}


def test_versions_return_the_tenants_markers(store: ExperienceStore, pool: Pool) -> None:
    mine = pool.points[ACME][20:23]
    theirs = pool.points[GLOBEX][0].experience.id
    asked = [p.experience.id for p in mine] + [theirs, experience_id(ACME, "never asked"), "not-a-uuid"]
    assert store.versions(ACME, asked) == {p.experience.id: Version(p.marker, p.experience) for p in mine}
    assert store.versions(GLOBEX, [theirs]) == {
        theirs: Version(GLOBEX_MARKERS[0], pool.points[GLOBEX][0].experience)
    }
    assert store.versions(ACME, []) == {}


def test_upsert_replaces_by_id(store: ExperienceStore, pool: Pool) -> None:
    old = pool.points[ACME][3]
    new = StoredPoint(
        replace(
            old.experience, answer="revised", majority_count=5, update_time=old.experience.update_time + 60
        ),
        pool.points[ACME][4].vector,
        LATER,
    )
    store.upsert([new])
    assert store.get(ACME, new.experience.id) == new.experience
    assert store.versions(ACME, [new.experience.id]) == {new.experience.id: Version(LATER, new.experience)}
    assert store.count(ACME) == 120
    stored = [p for p in store.scroll(ACME) if p.experience.id == new.experience.id]
    assert len(stored) == 1
    assert_same_point(stored[0], new)


def test_delete_reports_whether_it_existed(store: ExperienceStore, pool: Pool) -> None:
    gone = pool.points[ACME][10].experience.id
    assert store.delete(ACME, gone, LATER) is True
    assert store.delete(ACME, gone, LATER + 1) is False
    assert store.delete(ACME, "not-a-uuid", LATER) is False
    assert store.get(ACME, gone) is None
    assert store.get_many(ACME, [gone]) == {}
    assert store.count(ACME) == 119
    assert gone not in {e.id for e in store.page(ACME, None, 500)}
    assert gone not in {p.experience.id for p in store.scroll()}


def test_list_pages_in_id_order(store: ExperienceStore, pool: Pool) -> None:
    expected = sorted(pool.by_id(ACME))
    seen: list[str] = []
    after: str | None = None
    while page := store.page(ACME, after, 25):
        assert len(page) <= 25
        seen += [e.id for e in page]
        after = page[-1].id
    assert seen == expected
    assert store.page(ACME, None, 0) == []
    assert [e.id for e in store.page(ACME, expected[-3], 10)] == expected[-2:]
    # A cursor that is not (or no longer) stored still pages from where it sorts.
    store.delete(ACME, expected[50], LATER)
    assert [e.id for e in store.page(ACME, expected[50], 3)] == expected[51:54]
    with pytest.raises(ValueError):
        store.page(ACME, "not-a-uuid", 3)


def test_count_per_tenant(store: ExperienceStore, pool: Pool) -> None:
    assert (store.count(ACME), store.count(GLOBEX), store.count(NOBODY)) == (120, 40, 0)


def test_no_method_crosses_tenants(store: ExperienceStore, pool: Pool) -> None:
    acme_ids = [p.experience.id for p in pool.points[ACME]]
    globex_ids = set(pool.by_id(GLOBEX))
    probe = pool.points[ACME][0].experience
    assert store.get(GLOBEX, probe.id) is None
    assert store.get_many(GLOBEX, acme_ids) == {}
    assert store.versions(GLOBEX, acme_ids) == {}
    assert store.delete(GLOBEX, probe.id, LATER) is False
    assert store.get(ACME, probe.id) == probe
    assert {e.id for e in store.page(GLOBEX, None, 500)} == globex_ids
    assert {p.experience.id for p in store.scroll(GLOBEX, batch_size=16)} == globex_ids
    assert store.count(GLOBEX) == 40
    for method_result in (
        store.get(NOBODY, probe.id),
        store.get_many(NOBODY, acme_ids),
        store.versions(NOBODY, acme_ids),
        store.page(NOBODY, None, 10),
        list(store.scroll(NOBODY)),
    ):
        assert not method_result
    assert store.delete(NOBODY, probe.id, LATER) is False


def test_scroll_every_tenant_with_vectors_and_markers(store: ExperienceStore, pool: Pool) -> None:
    expected = {**pool.by_id(ACME), **pool.by_id(GLOBEX)}
    points = list(store.scroll(batch_size=33))
    assert sorted(p.experience.id for p in points) == sorted(expected)
    for point in points:
        assert_same_point(point, expected[point.experience.id])
    assert {p.experience.id for p in store.scroll(ACME, batch_size=16)} == set(pool.by_id(ACME))


def test_rejects_vectors_of_the_wrong_dimension(store: ExperienceStore, pool: Pool) -> None:
    short = pool.points[ACME][0].vector[:-1]
    with pytest.raises(ValueError):
        store.upsert([StoredPoint(replace(pool.points[ACME][0].experience, answer="short"), short)])
    assert store.get(ACME, pool.points[ACME][0].experience.id) == pool.points[ACME][0].experience
    store.upsert([])
    assert store.count(ACME) == 120


def test_concurrent_writers_and_readers(store: ExperienceStore, pool: Pool) -> None:
    rng = np.random.default_rng(11)
    batches = [make_points(f"writer-{w}", unit_vectors(rng, 30), rng) for w in range(4)]
    errors: list[BaseException] = []
    acme = pool.points[ACME]

    def write(points: list[StoredPoint]) -> None:
        try:
            for point in points:
                store.upsert([point])
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    def read() -> None:
        try:
            for i in range(30):
                wanted = [p.experience for p in acme[i : i + 5]]
                assert store.get_many(ACME, [e.id for e in wanted]) == {e.id: e for e in wanted}
                assert store.count(ACME) == 120
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(b,)) for b in batches] + [
        threading.Thread(target=read) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [store.count(f"writer-{w}") for w in range(4)] == [30] * 4


# The single-node store: deletes leave nothing behind, and there is no change feed.


def test_edge_keeps_no_tombstones_and_serves_no_changes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    points = make_points(ACME, unit_vectors(rng, 3), rng, [5, 6, 7])
    store = QdrantEdgeStore(tmp_path, DIM)
    try:
        assert store.shared is False
        store.upsert(points)
        gone = points[0].experience.id
        assert store.delete(ACME, gone, LATER) is True
        assert store.versions(ACME, [p.experience.id for p in points]) == {
            p.experience.id: Version(p.marker, p.experience) for p in points[1:]
        }
        assert store.purge_tombstones(LATER + 1) == 0
        with pytest.raises(NotImplementedError):
            store.changes([ACME], 0, 10)
    finally:
        store.close()


# The shared store: tombstones and the change feed.


@pytest.fixture(params=["qdrant-local", "qdrant-server"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ExperienceStore]:
    opened = open_store(request.param, request, tmp_path)
    assert opened.shared
    yield opened
    opened.close()


@pytest.fixture
def shared_pool(shared: ExperienceStore) -> Pool:
    return filled(shared, 9)


def assert_same_change(got: Change, expected: StoredPoint) -> None:
    assert (got.tenant, got.experience_id, got.marker) == (
        expected.experience.tenant,
        expected.experience.id,
        expected.marker,
    )
    assert_same_point(got.point, expected)


def test_changes_follow_marker_order_across_the_tenants_asked(
    shared: ExperienceStore, shared_pool: Pool
) -> None:
    every = sorted(shared_pool.points[ACME] + shared_pool.points[GLOBEX], key=lambda p: p.marker)
    changes = shared.changes([ACME, GLOBEX], 0, 500)
    assert [c.marker for c in changes] == [p.marker for p in every]
    for change, point in zip(changes, every, strict=True):
        assert_same_change(change, point)
    assert [c.experience_id for c in shared.changes([GLOBEX, NOBODY], 0, 500)] == [
        p.experience.id for p in shared_pool.points[GLOBEX]
    ]
    assert shared.changes([NOBODY], 0, 500) == []
    assert shared.changes([], 0, 500) == []


def test_changes_start_at_since_inclusive_and_respect_limit(
    shared: ExperienceStore, shared_pool: Pool
) -> None:
    acme = shared_pool.points[ACME]  # markers 10, 12, 14, ...
    assert [c.marker for c in shared.changes([ACME], 20, 5)] == [20, 22, 24, 26, 28]
    assert [c.marker for c in shared.changes([ACME], 21, 3)] == [22, 24, 26]
    assert [c.marker for c in shared.changes([ACME, GLOBEX], 20, 4)] == [20, 21, 22, 23]
    assert [c.experience_id for c in shared.changes([ACME], acme[-1].marker, 10)] == [acme[-1].experience.id]
    assert shared.changes([ACME], acme[-1].marker + 1, 10) == []
    assert shared.changes([ACME], 0, 0) == []


def test_a_delete_leaves_a_tombstone_only_versions_and_changes_see(
    shared: ExperienceStore, shared_pool: Pool
) -> None:
    acme = shared_pool.points[ACME]
    gone, kept = acme[10].experience, acme[11]
    assert shared.delete(ACME, gone.id, LATER) is True
    assert shared.delete(ACME, gone.id, LATER + 1) is False  # a tombstone is not there to delete

    assert shared.get(ACME, gone.id) is None
    assert shared.get_many(ACME, [gone.id, kept.experience.id]) == {kept.experience.id: kept.experience}
    assert gone.id not in {e.id for e in shared.page(ACME, None, 500)}
    assert shared.count(ACME) == 119
    assert gone.id not in {p.experience.id for p in shared.scroll(ACME)}
    assert gone.id not in {p.experience.id for p in shared.scroll()}

    assert shared.versions(ACME, [gone.id, kept.experience.id]) == {
        gone.id: Version(LATER, None),
        kept.experience.id: Version(kept.marker, kept.experience),
    }
    assert shared.versions(GLOBEX, [gone.id]) == {}
    assert shared.changes([ACME, GLOBEX], LATER, 10) == [Change(ACME, gone.id, LATER, None)]
    assert shared.changes([GLOBEX], LATER, 10) == []
    # The tombstone replaced the point: its old marker is no change any more.
    assert [c.experience_id for c in shared.changes([ACME], 0, 500)].count(gone.id) == 1


def test_re_recording_after_a_delete_replaces_the_tombstone(
    shared: ExperienceStore, shared_pool: Pool
) -> None:
    old = shared_pool.points[ACME][10]
    assert shared.delete(ACME, old.experience.id, LATER)
    again = StoredPoint(replace(old.experience, answer="again"), old.vector, LATER + 5)
    shared.upsert([again])

    assert shared.get(ACME, old.experience.id) == again.experience
    assert shared.count(ACME) == 120
    assert shared.versions(ACME, [old.experience.id]) == {
        old.experience.id: Version(LATER + 5, again.experience)
    }
    changes = shared.changes([ACME], LATER, 10)
    assert len(changes) == 1
    assert_same_change(changes[0], again)
    assert shared.purge_tombstones(LATER + 10) == 0


def test_purge_drops_only_tombstones_older_than_before(shared: ExperienceStore, shared_pool: Pool) -> None:
    acme = shared_pool.points[ACME]
    early, late, live = acme[0].experience.id, acme[1].experience.id, acme[2]
    assert shared.delete(ACME, early, LATER)
    assert shared.delete(ACME, late, LATER + 100)
    assert shared.delete(GLOBEX, shared_pool.points[GLOBEX][0].experience.id, LATER + 200)

    assert shared.purge_tombstones(LATER) == 0  # before is exclusive
    assert shared.purge_tombstones(LATER + 100) == 1
    assert shared.versions(ACME, [early, late, live.experience.id]) == {
        late: Version(LATER + 100, None),
        live.experience.id: Version(live.marker, live.experience),  # live points stay, however old
    }
    assert [c.marker for c in shared.changes([ACME, GLOBEX], LATER, 10)] == [LATER + 100, LATER + 200]
    assert shared.purge_tombstones(LATER + 100) == 0
    assert shared.purge_tombstones(LATER + 201) == 2
    assert shared.changes([ACME, GLOBEX], LATER, 10) == []
    assert (shared.count(ACME), shared.count(GLOBEX)) == (118, 39)
