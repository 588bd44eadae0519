"""Sublinear RoSE for pools of a million or more: no full pass over the pool per call.

1. The pool's lowest and highest similarity come from two vector-index queries (the question
   and its negation), so the equal-width bucket edges are those of the exact algorithm.
2. A uniform sample of the pool estimates each bucket's size; empty buckets are dropped and the
   largest split at its sample median, as the exact algorithm does with true counts.
3. Each bucket's winner is found one of two ways:
   - a small bucket at either end of the range is fetched whole with a thresholded
     vector query, and the exact rule picks from its members;
   - a large bucket is found by walking the in-memory pool most-complex-first (the mirror keeps
     that order) under an uncertainty cap, a chunk of rows at a time, with only those rows'
     similarities computed: the first walked rows that fall in the bucket and pass λ × the
     bucket's minimum uncertainty (estimated from the sample) win, ties broken as in exact.
   A bucket the walk never reaches falls back to the exact rule over its sample members.

The first two steps and the end fetches query the store (``plan``, off the event loop); the walk
reads the mirror (``finish``), which the caller must hold still.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from services.experience.backends.base import ExperienceStore
from services.experience.core.mirror import PoolView, tie_key
from services.experience.core.orchestrate import RATIO_SLACK, pick_in_bucket

#: A bucket estimated at most this large, at an end of the range, is fetched whole.
FETCH_LIMIT = 2048
#: Rows of the walk examined at a time, and at most in all before the sample decides.
WALK_CHUNK = 4096
WALK_LIMIT = 65_536


@dataclass(frozen=True)
class SublinearPick:
    experience_id: str
    similarity: float
    bucket: int


Member = tuple[str, float, float, float]  # (id, similarity, uncertainty, complexity)


@dataclass
class _Bucket:
    low: float  # inclusive
    high: float  # exclusive, except for the last bucket
    members: np.ndarray  # sample rows in the bucket
    size: float  # exact when fetched, else estimated from the sample
    fetched: list[Member] | None = None  # every pool member, when fetched whole


def _edges(store: ExperienceStore, tenant: str, query: np.ndarray) -> tuple[float, float] | None:
    _, top = store.search_ranked(tenant, query, 1)
    _, bottom = store.search_ranked(tenant, -query, 1)
    if not len(top) or not len(bottom):
        return None
    return -float(bottom[0]), float(top[0])


def _intervals(
    sample: PoolView, pool_size: int, similarity: np.ndarray, low: float, high: float, k: int
) -> list[_Bucket]:
    """The k equal-width intervals, sized from the sample."""
    scale = pool_size / max(len(sample), 1)
    width = (high - low) / k
    intervals = []
    for b in range(k):
        lo, hi = low + b * width, (low + (b + 1) * width if b < k - 1 else high)
        inside = (similarity >= lo) & ((similarity < hi) if b < k - 1 else (similarity <= hi))
        members = np.flatnonzero(inside)
        intervals.append(_Bucket(lo, hi, members, len(members) * scale))
    return intervals


def _fetch_ends(store: ExperienceStore, tenant: str, query: np.ndarray, intervals: list[_Bucket]) -> None:
    """Fetch the small intervals at either end whole (one vector query per end), so that their
    sizes and members are exact."""
    taken: set[int] = set()
    for order, from_top in ((range(len(intervals) - 1, -1, -1), True), (range(len(intervals)), False)):
        chosen, reach = [], 0.0
        for b in order:
            if b in taken or reach + intervals[b].size > FETCH_LIMIT:
                break
            reach += intervals[b].size
            chosen.append(b)
        if not chosen:
            continue
        taken.update(chosen)
        fetched = _fetch_end(store, tenant, query, [intervals[b] for b in chosen], from_top, int(reach * 2) + 64)
        for b, members in zip(chosen, fetched or [], strict=False):
            intervals[b].fetched, intervals[b].size = members, float(len(members))


def _split(bucket: _Bucket, similarity: np.ndarray) -> list[_Bucket] | None:
    """Halve a bucket in rank order, the more similar half taking the odd member: exactly when
    fetched, at the sample's median otherwise; None when it cannot be halved."""
    if bucket.fetched is not None:
        if len(bucket.fetched) < 2:
            return None
        ordered = sorted(bucket.fetched, key=lambda m: (m[1], tie_key(m[0])))
        cut = len(ordered) - (len(ordered) + 1) // 2
        middle = ordered[cut][1]
        none = np.zeros(0, dtype=np.int64)
        return [
            _Bucket(bucket.low, middle, none, float(cut), ordered[:cut]),
            _Bucket(middle, bucket.high, none, float(len(ordered) - cut), ordered[cut:]),
        ]
    if len(bucket.members) < 2:
        return None
    ordered_rows = bucket.members[np.argsort(similarity[bucket.members], kind="stable")]
    cut = len(ordered_rows) - (len(ordered_rows) + 1) // 2
    middle = float(similarity[ordered_rows[cut]])
    return [
        _Bucket(bucket.low, middle, ordered_rows[:cut], bucket.size / 2),
        _Bucket(middle, bucket.high, ordered_rows[cut:], bucket.size / 2),
    ]


def _buckets(intervals: list[_Bucket], similarity: np.ndarray, k: int) -> list[_Bucket]:
    """The exact algorithm's bucket plan over the (partly estimated) interval sizes: empty
    intervals dropped, the largest split until there are k."""
    buckets = [b for b in intervals if b.size > 0]
    while len(buckets) < k:
        largest = max(range(len(buckets)), key=lambda i: (buckets[i].size, -i))
        halves = _split(buckets[largest], similarity)
        if halves is None:
            break
        buckets[largest : largest + 1] = halves
    return buckets


def _fetch_end(
    store: ExperienceStore, tenant: str, query: np.ndarray, intervals: list[_Bucket], from_top: bool, limit: int
) -> list[list[Member]] | None:
    """Every member of consecutive end intervals (outermost first), in one vector query; None if
    the query hit its limit before reaching the innermost interval's far edge."""
    innermost = intervals[-1]
    if from_top:
        batch, scores = store.search_ranked(tenant, query, limit, score_threshold=innermost.low)
    else:
        batch, scores = store.search_ranked(tenant, -query, limit, score_threshold=-innermost.high)
        scores = -scores
    if len(batch.ids) >= limit:
        return None
    members = []
    for interval in intervals:
        inside = np.flatnonzero((scores >= interval.low) & (scores <= interval.high))
        members.append(
            [(batch.ids[i], float(scores[i]), float(batch.uncertainty[i]), float(batch.complexity[i])) for i in inside]
        )
    return members


def _exact_pick(members: list[Member], ratio: float) -> tuple[str, float]:
    ids = [m[0] for m in members]
    similarity, uncertainty, complexity = (np.array([m[i] for m in members]) for i in (1, 2, 3))
    keys = np.array([tie_key(i) for i in ids], dtype=np.int64)
    row = pick_in_bucket(np.arange(len(ids)), similarity, uncertainty, complexity, keys, ratio)
    return ids[row], float(similarity[row])


@dataclass
class SublinearPlan:
    """What the store queries found: the buckets, and the winners of the fetched ones."""

    query: np.ndarray
    sample: PoolView
    similarity: np.ndarray  # the sample's similarity to the query
    buckets: list[_Bucket]
    ratio: float
    winners: dict[int, tuple[str, float]] = field(default_factory=dict)


def plan(
    store: ExperienceStore,
    tenant: str,
    query: np.ndarray,
    sample: PoolView,
    pool_size: int,
    k: int,
    ratio: float,
) -> SublinearPlan | None:
    """Bucket edges from the index, interval sizes from ``sample`` or, for the small intervals at
    either end, fetched whole; the buckets as the exact algorithm plans them, and the fetched
    buckets decided. None when the tenant's index holds nothing."""
    edges = _edges(store, tenant, query)
    if edges is None:
        return None
    similarity = sample.vectors @ query
    intervals = _intervals(sample, pool_size, similarity, *edges, k)
    _fetch_ends(store, tenant, query, intervals)
    buckets = _buckets(intervals, similarity, k)
    result = SublinearPlan(query, sample, similarity, buckets, ratio)
    for b, bucket in enumerate(buckets):
        if bucket.fetched:
            result.winners[b] = _exact_pick(bucket.fetched, ratio)
    return result


def _bucket_of(pool: PoolView, rows: np.ndarray, query: np.ndarray, lows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    similarity = pool.vectors[rows] @ query
    return similarity, np.clip(np.searchsorted(lows, similarity, side="right") - 1, 0, len(lows) - 1)


def _floors(pool: PoolView, most_certain: np.ndarray, query: np.ndarray, lows: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Each wanted bucket's least uncertainty in the pool: where the walk most certain first
    first lands in it (NaN where the walk ends first)."""
    floors = np.full(len(lows), np.nan)
    for start in range(0, min(len(most_certain), WALK_LIMIT), WALK_CHUNK):
        rows = most_certain[start : start + WALK_CHUNK]
        _, bucket = _bucket_of(pool, rows, query, lows)
        hit, first = np.unique(bucket, return_index=True)
        new = np.isnan(floors[hit])
        floors[hit[new]] = pool.uncertainty[rows[first[new]]]
        if not np.isnan(floors[wanted]).any():
            break
    return floors


def _walk(
    pool: PoolView, walk: np.ndarray, query: np.ndarray, lows: np.ndarray, caps: np.ndarray
) -> dict[int, int]:
    """Per bucket with a finite cap, the pool row that the exact rule picks among the walked rows:
    most complex, then most similar, then smallest key."""
    walking = np.flatnonzero(np.isfinite(caps))
    best = np.full(len(caps), -1, dtype=np.int64)
    best_similarity = np.zeros(len(caps), dtype=np.float32)
    widest_cap = float(caps[walking].max())
    for start in range(0, min(len(walk), WALK_LIMIT), WALK_CHUNK):
        rows = walk[start : start + WALK_CHUNK]
        rows = rows[pool.uncertainty[rows] <= widest_cap]
        similarity, bucket = _bucket_of(pool, rows, query, lows)
        passed = pool.uncertainty[rows] <= caps[bucket]
        rows, similarity, bucket = rows[passed], similarity[passed], bucket[passed]
        if len(rows):
            # The chunk's rows compete with the rows held so far, bucket by bucket, in one sort.
            holders = np.flatnonzero(best >= 0)
            rows = np.concatenate([rows, best[holders]])
            similarity = np.concatenate([similarity, best_similarity[holders]])
            bucket = np.concatenate([bucket, holders])
            order = np.lexsort((pool.keys[rows], -similarity, -pool.complexity[rows], bucket))
            first = order[np.r_[True, bucket[order][1:] != bucket[order][:-1]]]
            best[bucket[first]], best_similarity[bucket[first]] = rows[first], similarity[first]
        reached = pool.complexity[walk[min(start + WALK_CHUNK, len(walk)) - 1]]
        if (best[walking] >= 0).all() and reached < pool.complexity[best[walking]].min():
            break
    return {int(b): int(best[b]) for b in walking if best[b] >= 0}


def finish(
    plan: SublinearPlan, pool: PoolView, most_complex: np.ndarray, most_certain: np.ndarray
) -> list[SublinearPick]:
    """RoSE picks, one per bucket, least similar bucket first: the plan's end winners; for the
    rest, each bucket's least uncertainty from a walk over ``pool`` most certain first (the
    sample's where that walk ends first), then a walk most complex first; the sample decides
    where the walks find nothing."""
    buckets, sample, similarity = plan.buckets, plan.sample, plan.similarity
    winners = dict(plan.winners)
    lows = np.array([bucket.low for bucket in buckets])
    wanted = np.array([b for b, bucket in enumerate(buckets) if b not in winners and len(bucket.members)], dtype=np.int64)
    if len(wanted):
        floors = _floors(pool, most_certain, plan.query, lows, wanted)
        caps = np.full(len(buckets), -np.inf)  # -inf: not walked (already won, or no sample to cap it)
        for b in wanted:
            floor = floors[b] if not np.isnan(floors[b]) else sample.uncertainty[buckets[b].members].min()
            caps[b] = plan.ratio * float(floor) * (1 + RATIO_SLACK) + RATIO_SLACK
        for b, row in _walk(pool, most_complex, plan.query, lows, caps).items():
            winners[b] = (pool.ids[row], float(pool.vectors[row] @ plan.query))
    for b, bucket in enumerate(buckets):  # never reached: the sample decides
        if b not in winners and len(bucket.members):
            row = pick_in_bucket(
                bucket.members, similarity, sample.uncertainty, sample.complexity, sample.keys, plan.ratio
            )
            winners[b] = (sample.ids[row], float(similarity[row]))
    return [SublinearPick(winners[b][0], winners[b][1], b) for b in sorted(winners)]
