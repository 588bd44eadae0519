"""The sublinear RoSE agrees with the exact one on a real embedded-engine pool."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.bucketed_selection import compact
from services.experience.backends.base import StoredPoint
from services.experience.backends.qdrant_edge import QdrantEdgeStore
from services.experience.core import sublinear
from services.experience.core.mirror import TenantMirror
from services.experience.core.orchestrate import rose
from services.experience.model import Experience, experience_id

TENANT = "agree"


def clustered_pool(n: int, dimension: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centres = rng.normal(size=(40, dimension))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = centres[rng.integers(40, size=n)] + rng.normal(0, 0.6 / np.sqrt(dimension), size=(n, dimension))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    uncertainty = np.round(rng.choice([0.0, 0.0, 0.33, 0.5, 0.69, 1.1], size=n), 2)
    complexity = np.round(rng.gamma(4, 1.2, size=n) + 1, 1)
    return vectors.astype(np.float32), uncertainty, complexity


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> tuple[QdrantEdgeStore, TenantMirror]:
    rng = np.random.default_rng(0)
    dimension, n = 64, 6000
    vectors, uncertainty, complexity = clustered_pool(n, dimension, rng)
    store = QdrantEdgeStore(Path(tmp_path_factory.mktemp("edge")), dimension, hnsw_threshold=10**9)
    mirror = TenantMirror(dimension)
    now = time.time()
    points = []
    for i in range(n):
        eid = experience_id(TENANT, f"question {i}")
        e = Experience(eid, TENANT, f"question {i}", "r", "a", float(uncertainty[i]), float(complexity[i]), 5, 3, now, now)
        points.append(StoredPoint(e, vectors[i]))
        mirror.upsert(eid, vectors[i], uncertainty[i], complexity[i])
    store.upsert(points)
    yield store, mirror
    store.close()


def test_sublinear_agrees_with_exact(pool: tuple[QdrantEdgeStore, TenantMirror]) -> None:
    store, mirror = pool
    rng = np.random.default_rng(1)
    view = mirror.view()
    sample = mirror.sample(2000, rng)
    agreement = []
    for _ in range(30):
        query = view.vectors[rng.integers(len(view))] + rng.normal(0, 0.05, size=view.vectors.shape[1])
        query = (query / np.linalg.norm(query)).astype(np.float32)
        similarity = view.vectors @ query
        exact = {view.ids[p.index] for p in rose(similarity, view.uncertainty, view.complexity, view.keys, 8)}
        found = sublinear.plan(store, TENANT, query, sample, len(view), 8, 1.2)
        assert found is not None
        picks = sublinear.finish(found, view, mirror.most_complex_first(), mirror.most_certain_first())
        assert [p.bucket for p in picks] == list(range(len(picks)))
        assert len({p.experience_id for p in picks}) == len(picks) == 8
        agreement.append(len(exact & {p.experience_id for p in picks}) / len(exact))
    print(f"sublinear agreement with exact over 30 queries: {np.mean(agreement):.3f}")
    assert np.mean(agreement) >= 0.95


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["upsert", "remove", "order", "view"]),
            st.integers(0, 30),
            st.integers(0, 4),
            st.integers(0, 3),
        ),
        max_size=80,
    )
)
def test_the_mirror_keeps_its_orders_and_codes_through_writes(operations) -> None:
    mirror = TenantMirror(2, capacity=4)
    for operation, question, complexity, uncertainty in operations:
        eid = experience_id(TENANT, f"question {question}")
        if operation == "upsert":
            vector = np.array([question + 1, complexity - uncertainty / 7], np.float32)
            mirror.upsert(eid, vector, uncertainty / 3, float(complexity))
        elif operation == "remove":
            mirror.remove(eid)
        elif operation == "order":
            mirror.most_complex_first(), mirror.most_certain_first()
        else:
            mirror.view()  # codes caught up here; later writes must keep them in step
    by_complexity, by_uncertainty = mirror.most_complex_first(), mirror.most_certain_first()
    for order in (by_complexity, by_uncertainty):
        assert sorted(order.tolist()) == list(range(mirror.size))
    assert (np.diff(mirror.complexity[by_complexity]) <= 0).all()
    assert (np.diff(mirror.uncertainty[by_uncertainty]) >= 0).all()
    view = mirror.view()
    expected = compact(view.vectors)
    assert view.compact is not None
    assert np.array_equal(view.compact.codes, expected.codes)
    assert np.array_equal(view.compact.scales, expected.scales)
    assert np.array_equal(view.compact.bounds, expected.bounds)


def test_sublinear_leaves_excluded_experiences_out_as_exact_does(pool: tuple[QdrantEdgeStore, TenantMirror]) -> None:
    store, mirror = pool
    rng = np.random.default_rng(2)
    view = mirror.view()
    query = view.vectors[5] + rng.normal(0, 0.05, size=view.vectors.shape[1]).astype(np.float32)
    query /= np.linalg.norm(query)
    first = {view.ids[p.index] for p in rose(view.vectors @ query, view.uncertainty, view.complexity, view.keys, 8)}
    kept = view.without(first)
    exact = {kept.ids[p.index] for p in rose(kept.vectors @ query, kept.uncertainty, kept.complexity, kept.keys, 8)}
    found = sublinear.plan(store, TENANT, query, mirror.sample(2000, rng).without(first), len(kept), 8, 1.2, first)
    assert found is not None
    excluded_rows = np.array([mirror.row_of[i] for i in first], dtype=np.int64)
    picks = {p.experience_id for p in sublinear.finish(found, view, mirror.most_complex_first(), mirror.most_certain_first(), excluded_rows)}
    assert len(picks) == 8 and not picks & first
    assert len(picks & exact) >= 7
