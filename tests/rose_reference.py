"""RoSE's Orchestrate step written plainly with numpy, the independent implementation the
service's kernels are checked against (alongside ``kernels.bucketed_selection.reference``)."""

from __future__ import annotations

import math

import numpy as np

from services.experience.core.orchestrate import (
    DEFAULT_UNCERTAINTY_RATIO,
    Bucketing,
    Pick,
    _similarity_order,
    pick_in_bucket,
)


def _halve(similarity: np.ndarray, keys: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split ``members`` in similarity order (exact ties by key), the more similar half taking
    the odd one. A selection around the cut, not a sort: O(len(members))."""
    values = similarity[members]
    cut = len(members) - math.ceil(len(members) / 2)
    pivot = values[np.argpartition(values, cut)[cut]]
    tied = members[values == pivot]
    tied = tied[np.argsort(keys[tied], kind="stable")]
    below = members[values < pivot]
    need = cut - len(below)
    return np.concatenate([below, tied[:need]]), np.concatenate([tied[need:], members[values > pivot]])


def divide_into_buckets(
    similarity: np.ndarray, keys: np.ndarray, k: int, bucketing: Bucketing = Bucketing.EQUAL_WIDTH
) -> list[np.ndarray]:
    """Divide the pool into at most k non-empty buckets of member indices, least similar first.

    Equal width: k equal intervals from the lowest similarity to the highest; empty ones are
    dropped, then the largest bucket is split in two (halving its members in similarity order,
    the more similar half taking the odd one) until there are k again or none can be split;
    among equally large buckets the least similar is split first.
    Equal count: k buckets of equal size in similarity order, the first ones taking the remainder.
    Members within a bucket are in no particular order.
    """
    n = len(similarity)
    if n == 0:
        return []
    if bucketing is Bucketing.EQUAL_COUNT:
        ordered = _similarity_order(similarity, keys, np.arange(n))
        return [b for b in np.array_split(ordered, min(k, n)) if len(b)]

    low, high = float(similarity.min()), float(similarity.max())
    if high > low:
        position = np.floor((similarity - low) / (high - low) * k).astype(np.int16)
        position = np.minimum(position, k - 1)  # the highest similarity closes the last interval
    else:
        position = np.zeros(n, dtype=np.int16)
    # A stable sort of small integers is a radix sort: one O(n) pass groups the buckets.
    grouped = np.argsort(position, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(position, minlength=k))])
    buckets = [grouped[bounds[b] : bounds[b + 1]] for b in range(k) if bounds[b + 1] > bounds[b]]
    while len(buckets) < k:
        largest = max(range(len(buckets)), key=lambda i: (len(buckets[i]), -i))
        if len(buckets[largest]) < 2:
            break
        buckets[largest : largest + 1] = list(_halve(similarity, keys, buckets[largest]))
    return buckets


def rose(
    similarity: np.ndarray,
    uncertainty: np.ndarray,
    complexity: np.ndarray,
    keys: np.ndarray,
    k: int,
    uncertainty_ratio: float = DEFAULT_UNCERTAINTY_RATIO,
    bucketing: Bucketing = Bucketing.EQUAL_WIDTH,
) -> list[Pick]:
    """RoSE: one demonstration per similarity bucket, least similar bucket first."""
    if k < 1:
        raise ValueError("k must be at least 1")
    if uncertainty_ratio < 1:
        raise ValueError("the uncertainty ratio λ must be at least 1")
    buckets = divide_into_buckets(similarity, keys, k, bucketing)
    return [
        Pick(pick_in_bucket(members, similarity, uncertainty, complexity, keys, uncertainty_ratio), bucket)
        for bucket, members in enumerate(buckets)
    ]
