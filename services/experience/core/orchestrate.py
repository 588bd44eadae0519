"""RoSE's Orchestrate step and the baselines it is A/B-tested against.

Everything works on arrays over a tenant's pool, index-aligned:
``similarity`` (cosine to the new question), ``uncertainty``, ``complexity`` and ``keys``
(a stable per-experience integer that breaks exact ties the same way in every process).
Selections are returned as pool indices with their bucket, in prompt order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from kernels.bucketed_selection import uncertainty_limit

DEFAULT_UNCERTAINTY_RATIO = 1.2
DEFAULT_MMR_LAMBDA = 0.5


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
    kept = members[
        bucket_uncertainty <= uncertainty_limit(float(bucket_uncertainty.min()), uncertainty_ratio)
    ]
    kept_complexity = complexity[kept]
    best = kept[kept_complexity == kept_complexity.max()]
    if len(best) > 1:
        best_similarity = similarity[best]
        best = best[best_similarity == best_similarity.max()]
    return int(best[np.argmin(keys[best])])


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


def random_rows(keys: np.ndarray, k: int, seed: int, excluded: np.ndarray | None = None) -> np.ndarray:
    """k distinct rows drawn uniformly with ``seed``, the same experiences in every process: ranks
    drawn in key order (row order varies between processes; keys do not), found by a selection
    rather than a sort of the pool. Rows marked in ``excluded`` are never drawn."""
    if excluded is not None and excluded.any():
        keys = np.where(excluded, np.iinfo(np.int64).max, keys)  # last in key order, past every rank drawn
        n = len(keys) - int(np.count_nonzero(excluded))
    else:
        n = len(keys)
    if n == 0 or k < 1:
        return np.zeros(0, dtype=np.int64)
    ranks = np.random.default_rng(seed).choice(n, size=min(k, n), replace=False)
    by_key = np.argpartition(keys, np.sort(ranks))
    return by_key[ranks]
