"""Sublinear RoSE for pools of a million or more: no full pass over the pool per call.

1. The pool's lowest and highest similarity come from two vector-index queries (the question
   and its negation), so the equal-width bucket edges are those of the exact algorithm.
2. A uniform sample of the pool estimates each bucket's size; empty buckets are dropped and the
   largest split at its sample median, as the exact algorithm does with true counts.
3. Each bucket's winner is found one of two ways:
   - a small bucket at either end of the range is fetched whole with a thresholded
     vector query, and the exact rule picks from its members;
   - a large bucket is found by walking the pool most-complex-first under an uncertainty cap
     (payload indexes; only the walked points' vectors are looked up): the first walked point
     that falls in the bucket and passes λ × the bucket's minimum uncertainty (estimated from
     the sample) wins.
   A bucket the walk never reaches falls back to the exact rule over its sample members.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from services.experience.backends.base import ExperienceStore
from services.experience.core.mirror import PoolView, tie_key
from services.experience.core.orchestrate import RATIO_SLACK, pick_in_bucket

#: ids -> (their vectors, a mask of the ids found); ids no longer in the pool are left out.
VectorLookup = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]

#: A bucket estimated at most this large, at an end of the range, is fetched whole.
FETCH_LIMIT = 2048
#: Points the complexity walk may visit before the sample decides.
WALK_LIMIT = 50_000


@dataclass(frozen=True)
class SublinearPick:
    experience_id: str
    similarity: float
    bucket: int


@dataclass
class _Bucket:
    low: float  # inclusive
    high: float  # exclusive, except for the last bucket
    members: np.ndarray  # sample rows in the bucket
    estimated_size: float


def _edges(store: ExperienceStore, tenant: str, query: np.ndarray) -> tuple[float, float] | None:
    _, top = store.search_ranked(tenant, query, 1)
    _, bottom = store.search_ranked(tenant, -query, 1)
    if not len(top) or not len(bottom):
        return None
    return -float(bottom[0]), float(top[0])


def _buckets(
    sample: PoolView, pool_size: int, similarity: np.ndarray, low: float, high: float, k: int
) -> list[_Bucket]:
    scale = pool_size / max(len(sample), 1)
    width = (high - low) / k
    buckets = []
    for b in range(k):
        lo, hi = low + b * width, (low + (b + 1) * width if b < k - 1 else high)
        inside = (similarity >= lo) & ((similarity < hi) if b < k - 1 else (similarity <= hi))
        members = np.flatnonzero(inside)
        # the two ends hold the pool's extreme points even when the sample missed them
        size = max(len(members) * scale, 1.0 if b in (0, k - 1) else 0.0)
        if size > 0:
            buckets.append(_Bucket(lo, hi, members, size))
    while len(buckets) < k:
        largest = max(range(len(buckets)), key=lambda i: (buckets[i].estimated_size, -i))
        bucket = buckets[largest]
        if len(bucket.members) < 2:
            break
        ordered = bucket.members[np.argsort(similarity[bucket.members], kind="stable")]
        cut = len(ordered) - (len(ordered) + 1) // 2
        middle = float(similarity[ordered[cut]])
        half = bucket.estimated_size / 2
        buckets[largest : largest + 1] = [
            _Bucket(bucket.low, middle, ordered[:cut], half),
            _Bucket(middle, bucket.high, ordered[cut:], half),
        ]
    return buckets


def _fetch_end(
    store: ExperienceStore, tenant: str, query: np.ndarray, buckets: list[_Bucket], from_top: bool, limit: int
) -> dict[int, list[tuple[str, float, float, float]]] | None:
    """Every member of consecutive end buckets (indices into ``buckets``, outermost first) as
    (id, similarity, uncertainty, complexity), in one vector query; None if the query hit its
    limit before reaching the innermost bucket's far edge."""
    innermost = buckets[-1]
    if from_top:
        batch, scores = store.search_ranked(tenant, query, limit, score_threshold=innermost.low)
    else:
        batch, scores = store.search_ranked(tenant, -query, limit, score_threshold=-innermost.high)
        scores = -scores
    if len(batch.ids) >= limit:
        return None
    members = []
    for bucket in buckets:
        inside = np.flatnonzero((scores >= bucket.low) & (scores <= bucket.high))
        members.append(
            [(batch.ids[i], float(scores[i]), float(batch.uncertainty[i]), float(batch.complexity[i])) for i in inside]
        )
    return dict(enumerate(members))


def _exact_pick(members: list[tuple[str, float, float, float]], ratio: float) -> tuple[str, float]:
    ids = [m[0] for m in members]
    similarity, uncertainty, complexity = (np.array([m[i] for m in members]) for i in (1, 2, 3))
    keys = np.array([tie_key(i) for i in ids], dtype=np.int64)
    row = pick_in_bucket(np.arange(len(ids)), similarity, uncertainty, complexity, keys, ratio)
    return ids[row], float(similarity[row])


def rose_sublinear(
    store: ExperienceStore,
    tenant: str,
    query: np.ndarray,
    sample: PoolView,
    pool_size: int,
    vectors_of: VectorLookup,
    k: int,
    ratio: float,
) -> list[SublinearPick]:
    """RoSE picks (one per bucket, least similar bucket first) from ``sample`` and index queries;
    ``vectors_of`` gives the vectors of walked points (the rows it still knows) by id."""
    edges = _edges(store, tenant, query)
    if edges is None:
        return []
    low, high = edges
    similarity = sample.vectors @ query
    buckets = _buckets(sample, pool_size, similarity, low, high, k)
    winners: dict[int, tuple[str, float]] = {}

    # Small buckets at either end: fetch them whole, one vector query per end.
    for order, from_top in ((range(len(buckets) - 1, -1, -1), True), (range(len(buckets)), False)):
        chosen, reach = [], 0.0
        for b in order:
            if b in winners or reach + buckets[b].estimated_size > FETCH_LIMIT:
                break
            reach += buckets[b].estimated_size
            chosen.append(b)
        if not chosen:
            continue
        fetched = _fetch_end(store, tenant, query, [buckets[b] for b in chosen], from_top, int(reach * 2) + 64)
        for position, members in (fetched or {}).items():
            if members:
                winners[chosen[position]] = _exact_pick(members, ratio)

    # The rest: walk most-complex-first under each bucket's estimated uncertainty cap.
    caps = np.full(len(buckets), -np.inf)  # -inf: not walked (already won, or no sample to cap it)
    for b, bucket in enumerate(buckets):
        if b not in winners and len(bucket.members):
            caps[b] = ratio * float(sample.uncertainty[bucket.members].min()) * (1 + RATIO_SLACK) + RATIO_SLACK
    walking = int(np.isfinite(caps).sum())
    lows = np.array([bucket.low for bucket in buckets])
    best: dict[int, tuple[str, float, float]] = {}  # bucket -> (id, similarity, complexity)
    visited = 0
    for batch in store.scroll_by_complexity(tenant, float(caps.max())) if walking else ():
        vectors, found = vectors_of(batch.ids)
        ids = [i for i, ok in zip(batch.ids, found, strict=True) if ok]
        uncertainty, complexity = batch.uncertainty[found], batch.complexity[found]
        similarity_to_query = vectors @ query
        bucket_of = np.clip(np.searchsorted(lows, similarity_to_query, side="right") - 1, 0, len(buckets) - 1)
        eligible = np.flatnonzero(uncertainty <= caps[bucket_of])  # in walk order: most complex first
        for b in np.unique(bucket_of[eligible]).tolist():
            rows = eligible[bucket_of[eligible] == b]
            top = rows[complexity[rows] == complexity[rows[0]]]
            # the walk orders by complexity only: among equals, the more similar wins, as in exact
            row = int(top[np.argmax(similarity_to_query[top])])
            candidate = (ids[row], float(similarity_to_query[row]), float(complexity[row]))
            current = best.get(b)
            if current is None or (candidate[2] == current[2] and candidate[1] > current[1]):
                best[b] = candidate
        visited += len(batch.ids)
        done = len(best) == walking and len(complexity) and complexity[-1] < min(w[2] for w in best.values())
        if done or visited >= WALK_LIMIT:
            break
    winners.update({b: (eid, s) for b, (eid, s, _) in best.items()})

    for b, bucket in enumerate(buckets):  # never reached: the sample decides
        if b not in winners and len(bucket.members):
            row = pick_in_bucket(
                bucket.members, similarity, sample.uncertainty, sample.complexity, sample.keys, ratio
            )
            winners[b] = (sample.ids[row], float(similarity[row]))
    return [SublinearPick(winners[b][0], winners[b][1], b) for b in sorted(winners)]
