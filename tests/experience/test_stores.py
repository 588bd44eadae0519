"""One contract for every experience store: qdrant-edge in a temporary directory, qdrant-client's
local mode, and a real Qdrant server when QDRANT_URL is set."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from services.experience.backends.qdrant_edge import QdrantEdgeStore
from services.experience.backends.qdrant_server import QdrantServerStore
from services.experience.core.experience import Experience, experience_id
from services.experience.core.ports import ExperienceStore, StoredPoint

DIM = 384
ACME, GLOBEX, NOBODY = "acme", "globex", "initech"
# Few distinct values, so that many points tie: order_by paging must neither repeat nor lose them.
UNCERTAINTIES = (0.0, 0.5, 0.69, 1.1)
COMPLEXITIES = (1.0, 2.0, 2.5, 3.0, 4.0)


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_points(tenant: str, vectors: np.ndarray, rng: np.random.Generator) -> list[StoredPoint]:
    points = []
    for i, vector in enumerate(vectors):
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
        points.append(StoredPoint(experience, vector))
    return points


@dataclass
class Pool:
    points: dict[str, list[StoredPoint]]  # by tenant

    def by_id(self, tenant: str) -> dict[str, StoredPoint]:
        return {p.experience.id: p for p in self.points[tenant]}

    def matrix(self, tenant: str) -> tuple[list[str], np.ndarray]:
        points = self.points[tenant]
        return [p.experience.id for p in points], np.stack([p.vector for p in points])


@pytest.fixture(params=["qdrant-edge", "qdrant-local", "qdrant-server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ExperienceStore]:
    if request.param == "qdrant-edge":
        opened: ExperienceStore = QdrantEdgeStore(tmp_path / "pool", DIM)
    elif request.param == "qdrant-local":
        opened = QdrantServerStore(QdrantClient(":memory:"), DIM)
    else:
        url = os.environ.get("QDRANT_URL")
        if not url:
            pytest.skip("QDRANT_URL is not set")
        collection = f"test_{uuid.uuid4().hex}"
        server = QdrantServerStore.from_url(url, DIM, os.environ.get("QDRANT_API_KEY"), collection=collection)
        request.addfinalizer(lambda: server.client.delete_collection(collection))
        opened = server
    yield opened
    opened.close()


@pytest.fixture
def pool(store: ExperienceStore) -> Pool:
    rng = np.random.default_rng(7)
    points = {
        ACME: make_points(ACME, unit_vectors(rng, 120), rng),
        GLOBEX: make_points(GLOBEX, unit_vectors(rng, 40), rng),
    }
    store.upsert(points[ACME][:60])
    store.upsert(points[ACME][60:] + points[GLOBEX])
    return Pool(points)


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


def test_upsert_replaces_by_id(store: ExperienceStore, pool: Pool) -> None:
    old = pool.points[ACME][3]
    new = replace(
        old.experience, answer="revised", majority_count=5, update_time=old.experience.update_time + 60
    )
    store.upsert([StoredPoint(new, pool.points[ACME][4].vector)])
    assert store.get(ACME, new.id) == new
    assert store.count(ACME) == 120
    hit = store.search(ACME, pool.points[ACME][4].vector, 2)
    assert {h.experience.id for h in hit} == {new.id, pool.points[ACME][4].experience.id}


def test_delete_reports_whether_it_existed(store: ExperienceStore, pool: Pool) -> None:
    gone = pool.points[ACME][10].experience.id
    assert store.delete(ACME, gone) is True
    assert store.delete(ACME, gone) is False
    assert store.delete(ACME, "not-a-uuid") is False
    assert store.get(ACME, gone) is None
    assert store.count(ACME) == 119
    assert gone not in {e.id for e in store.page(ACME, None, 500)}


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
    store.delete(ACME, expected[50])
    assert [e.id for e in store.page(ACME, expected[50], 3)] == expected[51:54]
    with pytest.raises(ValueError):
        store.page(ACME, "not-a-uuid", 3)


def test_count_per_tenant(store: ExperienceStore, pool: Pool) -> None:
    assert (store.count(ACME), store.count(GLOBEX), store.count(NOBODY)) == (120, 40, 0)


def test_no_method_crosses_tenants(store: ExperienceStore, pool: Pool) -> None:
    acme = pool.points[ACME]
    acme_ids = [p.experience.id for p in acme]
    globex_ids = set(pool.by_id(GLOBEX))
    probe = acme[0]
    assert store.get(GLOBEX, probe.experience.id) is None
    assert store.get_many(GLOBEX, acme_ids) == {}
    assert store.delete(GLOBEX, probe.experience.id) is False
    assert store.get(ACME, probe.experience.id) == probe.experience
    assert {e.id for e in store.page(GLOBEX, None, 500)} == globex_ids
    assert {p.experience.id for p in store.scroll(GLOBEX, batch_size=16)} == globex_ids
    assert {h.experience.id for h in store.search(GLOBEX, probe.vector, 500)} == globex_ids
    assert store.count(GLOBEX) == 40
    for method_result in (
        store.get(NOBODY, probe.experience.id),
        store.get_many(NOBODY, acme_ids),
        store.page(NOBODY, None, 10),
        list(store.scroll(NOBODY)),
        store.search(NOBODY, probe.vector, 10),
    ):
        assert not method_result
    assert store.delete(NOBODY, probe.experience.id) is False


def test_search_orders_by_cosine(store: ExperienceStore, pool: Pool) -> None:
    ids, matrix = pool.matrix(ACME)
    query = matrix[17]
    cosine = matrix @ query
    best = np.argsort(-cosine)[:10]
    hits = store.search(ACME, query, 10)
    assert [h.experience.id for h in hits] == [ids[i] for i in best]
    assert [h.score for h in hits] == pytest.approx(cosine[best].tolist(), abs=1e-5)
    assert hits[0].experience == pool.points[ACME][17].experience
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert store.search(ACME, query, 0) == []


def test_search_score_threshold(store: ExperienceStore, pool: Pool) -> None:
    _, matrix = pool.matrix(ACME)
    cosine = np.sort(matrix @ matrix[3])[::-1]
    threshold = float((cosine[5] + cosine[6]) / 2)  # between the 6th and 7th best
    hits = store.search(ACME, matrix[3], 50, score_threshold=threshold)
    assert len(hits) == 6
    assert all(h.score >= threshold for h in hits)


def test_negated_vector_finds_the_least_similar(store: ExperienceStore, pool: Pool) -> None:
    ids, matrix = pool.matrix(ACME)
    query = matrix[42]
    cosine = matrix @ query
    worst = np.argsort(cosine)[:5]
    hits = store.search(ACME, -query, 5)
    assert [h.experience.id for h in hits] == [ids[i] for i in worst]
    assert [h.score for h in hits] == pytest.approx((-cosine[worst]).tolist(), abs=1e-5)


def test_scroll_every_tenant_with_vectors(store: ExperienceStore, pool: Pool) -> None:
    expected = {**pool.by_id(ACME), **pool.by_id(GLOBEX)}
    points = list(store.scroll(batch_size=33))
    assert sorted(p.experience.id for p in points) == sorted(expected)
    for point in points:
        assert point.vector.dtype == np.float32 and point.vector.shape == (DIM,)
        np.testing.assert_allclose(point.vector, expected[point.experience.id].vector, atol=1e-6)
        assert point.experience == expected[point.experience.id].experience
    assert {p.experience.id for p in store.scroll(ACME, batch_size=16)} == set(pool.by_id(ACME))


def test_rejects_vectors_of_the_wrong_dimension(store: ExperienceStore, pool: Pool) -> None:
    short = pool.points[ACME][0].vector[:-1]
    with pytest.raises(ValueError):
        store.upsert([StoredPoint(pool.points[ACME][0].experience, short)])
    with pytest.raises(ValueError):
        store.search(ACME, short, 3)
    store.upsert([])


def test_concurrent_writers_and_readers(store: ExperienceStore, pool: Pool) -> None:
    rng = np.random.default_rng(11)
    batches = [make_points(f"writer-{w}", unit_vectors(rng, 30), rng) for w in range(4)]
    errors: list[BaseException] = []

    def write(points: list[StoredPoint]) -> None:
        try:
            for point in points:
                store.upsert([point])
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    def read() -> None:
        try:
            for i in range(30):
                assert len(store.search(ACME, pool.points[ACME][i].vector, 5)) == 5
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


def test_edge_search_of_a_sole_tenant_stays_isolated_once_another_arrives(tmp_path: Path) -> None:
    """A shard holding one tenant is searched without the tenant filter; a second tenant's
    first write must bring the filter back."""
    rng = np.random.default_rng(7)
    store = QdrantEdgeStore(tmp_path, DIM, hnsw_threshold=10**9)
    try:
        alone = make_points("solo", unit_vectors(rng, 30), rng)
        store.upsert(alone)
        probe = alone[0].vector
        assert {h.experience.id for h in store.search("solo", probe, 100)} == {p.experience.id for p in alone}
        assert store.search("other", probe, 100) == []
        other = make_points("other", unit_vectors(rng, 30), rng)
        store.upsert(other)
        assert {h.experience.id for h in store.search("solo", probe, 100)} == {p.experience.id for p in alone}
        assert {h.experience.id for h in store.search("other", probe, 100)} == {p.experience.id for p in other}
    finally:
        store.close()
