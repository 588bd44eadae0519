"""Orchestrate: buckets, the empty-bucket split, the λ filter, ties, and the baselines."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.experience.core.orchestrate import Bucketing, mmr, random_rows, similarity_top_k
from tests.rose_reference import divide_into_buckets, rose


def arr(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def as_lists(buckets: list[np.ndarray]) -> list[list[int]]:
    return [sorted(b.tolist()) for b in buckets]


def test_equal_width_buckets_when_the_pool_is_not_a_multiple_of_k() -> None:
    # range 0..1 cut into 3 intervals of width 1/3: [0, .33) [.33, .67) [.67, 1]
    similarity = arr(0.0, 0.1, 0.2, 0.4, 0.5, 0.7, 1.0)
    buckets = divide_into_buckets(similarity, np.arange(7), 3)
    assert as_lists(buckets) == [[0, 1, 2], [3, 4], [5, 6]]


def test_equal_count_buckets_give_the_remainder_to_the_first() -> None:
    similarity = arr(0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8)  # sorted: 1,5,3,2,4,6,0
    buckets = divide_into_buckets(similarity, np.arange(7), 3, Bucketing.EQUAL_COUNT)
    assert [b.tolist() for b in buckets] == [[1, 5, 3], [2, 4], [6, 0]]


def test_empty_buckets_are_dropped_and_the_largest_is_split() -> None:
    # width 0.25: [0,.25) holds 0,1,2,3; [.25,.5) and [.5,.75) are empty; [.75,1] holds 4
    similarity = arr(0.0, 0.05, 0.1, 0.2, 1.0)
    buckets = divide_into_buckets(similarity, np.arange(5), 4)
    # split 0..3 -> [0,1] [2,3]; then the first largest [0,1] -> [0] [1]
    assert [b.tolist() for b in buckets] == [[0], [1], [2, 3], [4]]


def test_an_odd_split_gives_the_extra_member_to_the_more_similar_half() -> None:
    similarity = arr(0.0, 0.01, 0.02, 1.0)  # buckets: {0,1,2} and {3}; k=3 needs one split
    buckets = divide_into_buckets(similarity, np.arange(4), 3)
    assert [b.tolist() for b in buckets] == [[0], [1, 2], [3]]


def test_a_pool_smaller_than_k_returns_every_question_once() -> None:
    similarity = arr(0.3, 0.9)
    picks = rose(similarity, arr(0.1, 0.2), arr(1, 1), np.arange(2), k=5)
    assert [(p.index, p.bucket) for p in picks] == [(0, 0), (1, 1)]


def test_identical_similarities_still_split_into_k() -> None:
    picks = rose(arr(0.5, 0.5, 0.5, 0.5), arr(0, 0, 0, 0), arr(1, 2, 3, 4), np.arange(4), k=2)
    # keys order the tie: [0,1] and [2,3]; most complex of each
    assert [p.index for p in picks] == [1, 3]


def test_uncertainty_filter_then_most_complex() -> None:
    similarity = arr(0.1, 0.2, 0.3, 0.4)  # one bucket with k=1
    uncertainty = arr(0.50, 0.59, 0.61, 0.2)
    complexity = arr(9, 7, 8, 1)
    # min 0.2 -> threshold 0.24: only index 3 survives although it is the least complex
    assert rose(similarity, uncertainty, complexity, np.arange(4), k=1)[0].index == 3
    # λ = 3 -> threshold 0.6: 0, 1 and 3 survive; 0 is the most complex
    assert rose(similarity, uncertainty, complexity, np.arange(4), k=1, uncertainty_ratio=3)[0].index == 0


def test_lambda_boundary_is_inclusive() -> None:
    uncertainty = arr(0.5, 0.6)  # 0.6 == 1.2 * 0.5 exactly in decimal, not in binary
    picks = rose(arr(0.1, 0.2), uncertainty, arr(1, 5), np.arange(2), k=1, uncertainty_ratio=1.2)
    assert picks[0].index == 1


def test_complexity_ties_go_to_the_more_similar_then_the_smaller_key() -> None:
    similarity = arr(0.1, 0.3, 0.3)
    picks = rose(similarity, arr(0, 0, 0), arr(4, 4, 4), np.array([7, 9, 8]), k=1)
    assert picks[0].index == 2  # 1 and 2 are equally similar; key 8 < 9


def test_rose_returns_least_similar_bucket_first_with_bucket_numbers() -> None:
    rng = np.random.default_rng(3)
    similarity = rng.uniform(-1, 1, 200)
    picks = rose(similarity, rng.uniform(0, 2, 200), rng.integers(1, 9, 200).astype(float), np.arange(200), k=6)
    assert [p.bucket for p in picks] == list(range(6))
    assert np.all(np.diff(similarity[[p.index for p in picks]]) > 0)


@pytest.mark.parametrize("bad", [{"k": 0}, {"k": 2, "uncertainty_ratio": 0.9}])
def test_invalid_parameters(bad: dict) -> None:
    with pytest.raises(ValueError):
        rose(arr(0.1), arr(0), arr(1), np.arange(1), **bad)


def test_similarity_top_k_is_least_similar_first() -> None:
    picks = similarity_top_k(arr(0.2, 0.9, 0.5, 0.7), np.arange(4), 3)
    assert [p.index for p in picks] == [2, 3, 1]


def test_similarity_top_k_breaks_a_tie_at_the_kth_by_smaller_key() -> None:
    # 0.5 four times for the last two places: keys 3 and 5 win over 7 and 9, whatever the rows
    picks = similarity_top_k(arr(0.5, 0.9, 0.5, 0.5, 0.1, 0.5), np.array([7, 1, 3, 9, 2, 5]), 3)
    assert [p.index for p in picks] == [2, 5, 1]


def test_mmr_prefers_diverse_neighbours() -> None:
    vectors = np.array([[1, 0], [0.99, 0.141], [0, 1]], dtype=np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    query = np.array([0.8, 0.6])
    similarity = vectors @ query
    # similarities 0.80, 0.88, 0.60: relevance takes the near duplicates 0 and 1; MMR takes 1,
    # then scores 0 at 0.5·0.80 − 0.5·0.99 < 0 and 2 at 0.5·0.60 − 0.5·0.14 > 0, so takes 2
    assert {p.index for p in similarity_top_k(similarity, np.arange(3), 2)} == {0, 1}
    assert {p.index for p in mmr(similarity, vectors, np.arange(3), 2, trade_off=0.5)} == {1, 2}


def test_random_is_reproducible_with_a_seed_whatever_the_row_order() -> None:
    keys = np.arange(50) * 7
    a = random_rows(keys, 5, seed=11)
    assert a.tolist() == random_rows(keys, 5, seed=11).tolist()
    assert len(set(a.tolist())) == 5
    shuffled = np.random.default_rng(0).permutation(50)  # another process's row order
    assert set(keys[shuffled][random_rows(keys[shuffled], 5, seed=11)]) == set(keys[a])


pools = st.integers(1, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(-1, 1, allow_nan=False), min_size=n, max_size=n),
        st.lists(st.floats(0, 3, allow_nan=False), min_size=n, max_size=n),
        st.lists(st.integers(1, 12), min_size=n, max_size=n),
    )
)


@settings(max_examples=200, deadline=None)
@given(pools, st.integers(1, 12), st.sampled_from(list(Bucketing)), st.floats(1, 3))
def test_rose_properties(pool: tuple, k: int, bucketing: Bucketing, ratio: float) -> None:
    similarity, uncertainty, complexity = (np.array(x, dtype=np.float64) for x in pool)
    keys = np.arange(len(similarity))
    picks = rose(similarity, uncertainty, complexity, keys, k, ratio, bucketing)
    indices = [p.index for p in picks]
    assert len(indices) == min(k, len(similarity))
    assert len(set(indices)) == len(indices)
    assert [p.bucket for p in picks] == list(range(len(picks)))
    assert picks == rose(similarity, uncertainty, complexity, keys, k, ratio, bucketing)
    # the same pool in another row order picks the same experiences
    perm = np.random.default_rng(0).permutation(len(similarity))
    again = rose(similarity[perm], uncertainty[perm], complexity[perm], keys[perm], k, ratio, bucketing)
    assert sorted(perm[p.index] for p in again) == sorted(indices)
