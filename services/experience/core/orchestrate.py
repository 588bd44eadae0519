"""RoSE's Orchestrate step and the baselines it is A/B-tested against.

Everything works on arrays over a tenant's pool, index-aligned:
``similarity`` (cosine to the new question), ``uncertainty``, ``complexity`` and ``keys``
(a stable per-experience integer that breaks exact ties the same way in every process).
Selections are returned as pool indices with their bucket, in prompt order.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

DEFAULT_UNCERTAINTY_RATIO = 1.2
DEFAULT_MMR_LAMBDA = 0.5
# Relative slack on λ·min so that float noise never drops the bucket's own minimum.
RATIO_SLACK = 1e-9


def uncertainty_limit(floor: float, uncertainty_ratio: float) -> float:
    """The λ filter's inclusive bound on uncertainty in a bucket whose least is ``floor``."""
    return uncertainty_ratio * floor * (1 + RATIO_SLACK) + RATIO_SLACK


class Bucketing(enum.Enum):
    EQUAL_WIDTH = "equal_width"
    EQUAL_COUNT = "equal_count"


@dataclass(frozen=True)
class Pick:
    index: int  # row in the pool arrays
    bucket: int | None  # 0 = least similar bucket; None for the baselines


def _similarity_order(similarity: np.ndarray, keys: np.ndarray, members: np.ndarray) -> np.ndarray:
    """``members`` sorted by similarity ascending, exact ties by key."""
    return members[np.lexsort((keys[members], similarity[members]))]


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


def pick_in_bucket(
    members: np.ndarray,
    similarity: np.ndarray,
    uncertainty: np.ndarray,
    complexity: np.ndarray,
    keys: np.ndarray,
    uncertainty_ratio: float,
) -> int:
    """Keep members whose uncertainty is at most λ × the bucket's minimum, then take the most
    complex; ties go to the more similar, then to the smaller key. O(len(members))."""
    bucket_uncertainty = uncertainty[members]
    kept = members[bucket_uncertainty <= uncertainty_limit(float(bucket_uncertainty.min()), uncertainty_ratio)]
    kept_complexity = complexity[kept]
    best = kept[kept_complexity == kept_complexity.max()]
    if len(best) > 1:
        best_similarity = similarity[best]
        best = best[best_similarity == best_similarity.max()]
    return int(best[np.argmin(keys[best])])


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


def similarity_top_k(similarity: np.ndarray, keys: np.ndarray, k: int) -> list[Pick]:
    """The k most similar (exact ties at the k-th by smaller key), returned least similar first
    (the best sits next to the question)."""
    n = len(similarity)
    if n == 0:
        return []
    k = min(k, n)
    if k < n:
        threshold = similarity[np.argpartition(-similarity, k - 1)[k - 1]]
        above = np.flatnonzero(similarity > threshold)
        tied = np.flatnonzero(similarity == threshold)
        tied = tied[np.argsort(keys[tied], kind="stable")][: k - len(above)]
        candidates = np.concatenate([above, tied])
    else:
        candidates = np.arange(n)
    ordered = _similarity_order(similarity, keys, candidates)
    return [Pick(int(i), None) for i in ordered]


def mmr_fetch(k: int) -> int:
    """How many of the most similar MMR chooses among, by default."""
    return max(20 * k, 100)


def mmr(
    similarity: np.ndarray,
    vectors: np.ndarray,
    keys: np.ndarray,
    k: int,
    trade_off: float = DEFAULT_MMR_LAMBDA,
    fetch: int | None = None,
) -> list[Pick]:
    """Maximal marginal relevance among the ``fetch`` most similar (default ``mmr_fetch(k)``):
    greedily maximise trade_off·sim(q, x) − (1 − trade_off)·max sim(x, chosen)."""
    n = len(similarity)
    if n == 0:
        return []
    fetch = min(n, fetch or mmr_fetch(k))
    candidates = similarity_top_k(similarity, keys, fetch)
    pool = np.array([p.index for p in candidates])
    redundancy = np.full(len(pool), -np.inf)
    chosen: list[int] = []
    for _ in range(min(k, len(pool))):  # never more than it chooses among
        score = trade_off * similarity[pool] - (1 - trade_off) * np.where(np.isinf(redundancy), 0, redundancy)
        score[chosen] = -np.inf
        best = int(np.lexsort((keys[pool], -score))[0])
        chosen.append(best)
        redundancy = np.maximum(redundancy, vectors[pool] @ vectors[pool[best]])
    ordered = _similarity_order(similarity, keys, pool[chosen])
    return [Pick(int(i), None) for i in ordered]


def random_rows(keys: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k distinct rows drawn uniformly with ``seed``, the same experiences in every process."""
    by_key = np.argsort(keys, kind="stable")  # row order varies between processes; keys do not
    return by_key[np.random.default_rng(seed).choice(len(keys), size=min(k, len(keys)), replace=False)]
