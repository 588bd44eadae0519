"""The sublinear RoSE agrees with the exact one; the mirror keeps its orders, codes and
partition through writes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.bucketed_selection import compact
from services.experience.core import sublinear
from services.experience.core.experience import experience_id
from services.experience.core.mirror import TenantMirror
from services.experience.core.partition import Partition
from tests.rose_reference import rose

TENANT = "agree"


def clustered_pool(n: int, dimension: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centres = rng.normal(size=(40, dimension))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = centres[rng.integers(40, size=n)] + rng.normal(0, 0.6 / np.sqrt(dimension), size=(n, dimension))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    uncertainty = np.round(rng.choice([0.0, 0.0, 0.33, 0.5, 0.69, 1.1], size=n), 2)
    complexity = np.round(rng.gamma(4, 1.2, size=n) + 1, 1)
    return vectors.astype(np.float32), uncertainty, complexity


def partition_now(mirror: TenantMirror) -> None:
    """Train, place and adopt a partition in one go (the pool does it in steps, off its lock)."""
    mirror.catch_up()
    mirror.pending = Partition.train(mirror.training_rows(), mirror.size)
    mirror.place_pending(0)
    mirror.adopt_pending()


@pytest.fixture(scope="module")
def mirror() -> TenantMirror:
    rng = np.random.default_rng(0)
    dimension, n = 64, 6000
    vectors, uncertainty, complexity = clustered_pool(n, dimension, rng)
    mirror = TenantMirror(dimension)
    for i in range(n):
        mirror.upsert(experience_id(TENANT, f"question {i}"), vectors[i], uncertainty[i], complexity[i])
    partition_now(mirror)
    return mirror


def test_sublinear_agrees_with_exact(mirror: TenantMirror) -> None:
    rng = np.random.default_rng(1)
    view = mirror.view()
    sample = mirror.sample(2000, rng)
    agreement = []
    for _ in range(30):
        query = view.vectors[rng.integers(len(view))] + rng.normal(0, 0.05, size=view.vectors.shape[1])
        query = (query / np.linalg.norm(query)).astype(np.float32)
        similarity = view.vectors @ query
        exact = {view.ids[p.index] for p in rose(similarity, view.uncertainty, view.complexity, view.keys, 8)}
        picks = sublinear.select(mirror, query, sample, len(view), 8, 1.2)
        assert [p.bucket for p in picks] == list(range(len(picks)))
        assert len({p.experience_id for p in picks}) == len(picks) == 8
        agreement.append(len(exact & {p.experience_id for p in picks}) / len(exact))
    print(f"sublinear agreement with exact over 30 queries: {np.mean(agreement):.3f}")
    assert np.mean(agreement) >= 0.95


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["upsert", "remove", "order", "view", "partition", "train", "place", "adopt"]),
            st.integers(0, 30),
            st.integers(0, 4),
            st.integers(0, 3),
        ),
        max_size=80,
    )
)
def test_the_mirror_keeps_its_orders_codes_and_partition_through_writes(operations) -> None:
    mirror = TenantMirror(2, capacity=4)
    placed = 0
    for operation, question, complexity, uncertainty in operations:
        eid = experience_id(TENANT, f"question {question}")
        if operation == "upsert":
            vector = np.array([question + 1, complexity - uncertainty / 7], np.float32)
            mirror.upsert(eid, vector, uncertainty / 3, float(complexity))
        elif operation == "remove":
            mirror.remove(eid)
        elif operation == "order":
            mirror.most_complex_first(), mirror.most_certain_first()
        elif operation == "partition" and mirror.size:
            partition_now(mirror)
        elif operation == "train" and mirror.size and mirror.pending is None:
            # A partition built beside the live one, as the pool does off its lock.
            mirror.pending = Partition.train(mirror.training_rows(), mirror.size)
            placed = 0
        elif operation == "place" and mirror.pending is not None:
            placed = mirror.place_pending(placed)
        elif operation == "adopt" and mirror.pending is not None:
            mirror.catch_up()
            mirror.adopt_pending()
        else:
            mirror.catch_up()  # later writes must keep the codes in step
    by_complexity, by_uncertainty = mirror.most_complex_first(), mirror.most_certain_first()
    for order in (by_complexity, by_uncertainty):
        assert sorted(order.tolist()) == list(range(mirror.size))
    assert (np.diff(mirror.complexity[by_complexity]) <= 0).all()
    assert (np.diff(mirror.uncertainty[by_uncertainty]) >= 0).all()
    mirror.catch_up()
    view = mirror.view()
    expected = compact(view.vectors)
    assert view.compact is not None
    assert np.array_equal(view.compact.codes, expected.codes)
    assert np.array_equal(view.compact.scales, expected.scales)
    assert np.array_equal(view.compact.bounds, expected.bounds)
    if mirror.partition is not None:
        partition = mirror.partition
        listed = np.concatenate(partition.members)
        assert sorted(listed.tolist()) == list(range(mirror.size))  # every row in one cluster
        for cluster, members in enumerate(partition.members):
            assert (partition.cluster_of[members] == cluster).all()
        assert (partition.cluster_of[mirror.size :] == -1).all()
        similarity = view.vectors @ partition.centroids.T  # each row sits in a nearest cluster
        placed = similarity[np.arange(mirror.size), partition.cluster_of[: mirror.size]]
        assert (placed >= similarity.max(axis=1, initial=-np.inf) - 1e-4).all()


def test_sublinear_leaves_excluded_experiences_out_as_exact_does(mirror: TenantMirror) -> None:
    rng = np.random.default_rng(2)
    view = mirror.view()
    query = view.vectors[5] + rng.normal(0, 0.05, size=view.vectors.shape[1]).astype(np.float32)
    query /= np.linalg.norm(query)
    first = {view.ids[p.index] for p in rose(view.vectors @ query, view.uncertainty, view.complexity, view.keys, 8)}
    kept = view.without(first)
    exact = {kept.ids[p.index] for p in rose(kept.vectors @ query, kept.uncertainty, kept.complexity, kept.keys, 8)}
    excluded_rows = np.array([mirror.row_of[i] for i in first], dtype=np.int64)
    sample = mirror.sample(2000, rng).without(first)
    picks = {p.experience_id for p in sublinear.select(mirror, query, sample, len(kept), 8, 1.2, excluded_rows)}
    assert len(picks) == 8 and not picks & first
    assert len(picks & exact) >= 7
