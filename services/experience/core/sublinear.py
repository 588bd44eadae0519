"""Sublinear RoSE for pools of a million or more: no full pass over the pool per call.

1. Two probes of the pool's k-means partition, the clusters most and least similar to the
   question, find the most and the least similar points: the pool's similarity range (so the
   equal-width intervals are those of the exact algorithm), and the members of the small
   intervals at either end.
2. A uniform sample of the pool sizes the other intervals; empty intervals are dropped and the
   largest bucket split (at its sample median unless fetched whole), as exact does with true
   counts. A fetched bucket's winner follows the exact rule over its members.
3. For each other bucket, a walk over the in-memory pool most certain first (the mirror keeps
   that order) finds its least uncertainty: where the walk first lands in it. Then a walk most
   complex first, a chunk of rows at a time with only those rows' similarities computed, finds
   the first rows in the bucket under λ × that minimum; ties break as in exact.
   A bucket the walks never reach falls back to the exact rule over its sample members.

Where it can differ from exact: a probe that misses the pool's most or least similar point
(every interval edge moves a little), a bucket split at the sample's median, an interval the
sample missed. Everything reads the mirror, which the caller holds still through ``select``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernels import dispatch as kernels
from kernels.bucketed_selection import uncertainty_limit
from services.experience.core.mirror import PoolView, TenantMirror, tie_key
from services.experience.core.orchestrate import pick_in_bucket
from services.experience.core.partition import Partition

#: End intervals are taken whole from the probes while their estimated sizes add up to at most
#: this; larger ones are walked.
FETCH_LIMIT = 512
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


@dataclass(frozen=True)
class _EndHits:
    """The points most similar (top) or least similar (bottom) to the query that a probe found:
    taken as every point from the end up to ``reach`` (inclusive when ``complete``: the probe
    covered the whole pool)."""

    members: list[Member]  # from the end inwards
    reach: float
    complete: bool


def _end_limit(outward_first: list[_Bucket]) -> int:
    """Points to take: twice the sample's estimate of the small intervals at this end."""
    reach = 0.0
    for interval in outward_first:
        if reach + interval.size > FETCH_LIMIT:
            break
        reach += interval.size
    return int(reach * 2) + 64


def _most_extreme(similarity: np.ndarray, keys: np.ndarray, limit: int, highest: bool) -> np.ndarray:
    """Positions of the ``limit`` highest (or lowest) similarities, from the end inwards, exact
    ties by key."""
    signed = -similarity if highest else similarity
    if limit < len(signed):
        edge = np.partition(signed, limit - 1)[limit - 1]
        within = np.flatnonzero(signed <= edge)  # the limit, and any tied with the last of them
    else:
        within = np.arange(len(signed))
    return within[np.lexsort((keys[within], signed[within]))][:limit]


def _probe_end(
    pool: PoolView,
    partition: Partition,
    query: np.ndarray,
    limit: int,
    from_top: bool,
    excluded_rows: np.ndarray,
) -> _EndHits:
    rows = partition.probe(query, from_top, len(pool))
    complete = len(rows) == len(pool) and len(rows) - len(excluded_rows) <= limit
    if len(excluded_rows):
        rows = rows[~np.isin(rows, excluded_rows)]
    similarity = kernels.similarity_of_rows(pool.vectors, rows, query)
    outward = _most_extreme(similarity, pool.keys[rows], limit, from_top)
    members = [
        (pool.ids[row], float(sim), float(pool.uncertainty[row]), float(pool.complexity[row]))
        for row, sim in zip(rows[outward].tolist(), similarity[outward].tolist(), strict=True)
    ]
    return _EndHits(members, members[-1][1] if members else 0.0, complete)


def _take_ends(intervals: list[_Bucket], top: _EndHits, bottom: _EndHits) -> None:
    """Intervals wholly inside what an end probe reached get their exact members and size."""
    for hits, order in ((top, range(len(intervals) - 1, -1, -1)), (bottom, range(len(intervals)))):
        for b in order:
            interval = intervals[b]
            covered = interval.low > hits.reach if hits is top else interval.high < hits.reach
            if interval.fetched is not None or not (hits.complete or covered):
                break
            last = b == len(intervals) - 1
            interval.fetched = [
                m
                for m in hits.members
                if m[1] >= interval.low and (m[1] <= interval.high if last else m[1] < interval.high)
            ]
            interval.size = float(len(interval.fetched))


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


def _exact_pick(members: list[Member], ratio: float) -> tuple[str, float]:
    ids = [m[0] for m in members]
    similarity, uncertainty, complexity = (np.array([m[i] for m in members]) for i in (1, 2, 3))
    keys = np.array([tie_key(i) for i in ids], dtype=np.int64)
    row = pick_in_bucket(np.arange(len(ids)), similarity, uncertainty, complexity, keys, ratio)
    return ids[row], float(similarity[row])


@dataclass
class _Plan:
    """What the probes and the sample found: the buckets, and the winners of the fetched ones."""

    similarity: np.ndarray  # the sample's similarity to the query
    buckets: list[_Bucket]
    winners: dict[int, tuple[str, float]]


def _plan(
    pool: PoolView,
    partition: Partition,
    query: np.ndarray,
    sample: PoolView,
    pool_size: int,
    k: int,
    ratio: float,
    excluded_rows: np.ndarray,
) -> _Plan | None:
    """Two probes of ``partition``, most and least similar first, give the pool's similarity
    range and the members of the small intervals at either end; the other intervals are sized
    from ``sample``. Returns the buckets as the exact algorithm plans them, with the fetched
    buckets decided; None when the pool (less ``excluded_rows``) is empty."""
    similarity = sample.vectors @ query
    if not len(similarity):
        return None
    guess = _intervals(sample, pool_size, similarity, float(similarity.min()), float(similarity.max()), k)
    top = _probe_end(pool, partition, query, _end_limit(guess[::-1]), True, excluded_rows)
    bottom = _probe_end(pool, partition, query, _end_limit(guess), False, excluded_rows)
    if not top.members or not bottom.members:
        return None
    low = min(bottom.members[0][1], float(similarity.min()))
    high = max(top.members[0][1], float(similarity.max()))
    intervals = _intervals(sample, pool_size, similarity, low, high, k)
    _take_ends(intervals, top, bottom)
    buckets = _buckets(intervals, similarity, k)
    winners = {b: _exact_pick(bucket.fetched, ratio) for b, bucket in enumerate(buckets) if bucket.fetched}
    return _Plan(similarity, buckets, winners)


def _bucket_of(
    pool: PoolView, rows: np.ndarray, query: np.ndarray, lows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    similarity = kernels.similarity_of_rows(pool.vectors, rows, query)
    return similarity, np.clip(np.searchsorted(lows, similarity, side="right") - 1, 0, len(lows) - 1)


def _walked(order: np.ndarray, start: int, excluded_rows: np.ndarray) -> np.ndarray:
    rows = order[start : start + WALK_CHUNK]
    return rows[~np.isin(rows, excluded_rows)] if len(excluded_rows) else rows


def _floors(
    pool: PoolView,
    most_certain: np.ndarray,
    excluded_rows: np.ndarray,
    query: np.ndarray,
    lows: np.ndarray,
    wanted: np.ndarray,
) -> np.ndarray:
    """Each wanted bucket's least uncertainty in the pool: where the walk most certain first
    first lands in it (NaN where the walk ends first)."""
    floors = np.full(len(lows), np.nan)
    for start in range(0, min(len(most_certain), WALK_LIMIT), WALK_CHUNK):
        rows = _walked(most_certain, start, excluded_rows)
        _, bucket = _bucket_of(pool, rows, query, lows)
        hit, first = np.unique(bucket, return_index=True)
        new = np.isnan(floors[hit])
        floors[hit[new]] = pool.uncertainty[rows[first[new]]]
        if not np.isnan(floors[wanted]).any():
            break
    return floors


def _walk(
    pool: PoolView,
    walk: np.ndarray,
    excluded_rows: np.ndarray,
    query: np.ndarray,
    lows: np.ndarray,
    caps: np.ndarray,
) -> dict[int, int]:
    """Per bucket with a finite cap, the pool row that the exact rule picks among the walked rows:
    most complex, then most similar, then smallest key."""
    walking = np.flatnonzero(np.isfinite(caps))
    best = np.full(len(caps), -1, dtype=np.int64)
    best_similarity = np.zeros(len(caps), dtype=np.float32)
    widest_cap = float(caps[walking].max())
    for start in range(0, min(len(walk), WALK_LIMIT), WALK_CHUNK):
        rows = _walked(walk, start, excluded_rows)
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


def select(
    mirror: TenantMirror,
    query: np.ndarray,
    sample: PoolView,
    pool_size: int,
    k: int,
    ratio: float,
    excluded_rows: np.ndarray | None = None,
) -> list[SublinearPick]:
    """RoSE picks over ``mirror`` (partitioned), one per bucket, least similar bucket first.

    The ends come from the partition's probes; for the other buckets, each one's least
    uncertainty from a walk over the pool most certain first (the sample's where that walk ends
    first), then a walk most complex first; the sample decides where the walks find nothing.
    Rows in ``excluded_rows`` (``pool_size`` counts without them) are never picked."""
    assert mirror.partition is not None, "partition the mirror first"
    excluded_rows = np.zeros(0, dtype=np.int64) if excluded_rows is None else excluded_rows
    pool = mirror.view()
    plan = _plan(pool, mirror.partition, query, sample, pool_size, k, ratio, excluded_rows)
    if plan is None:
        return []
    most_complex, most_certain = mirror.most_complex_first(), mirror.most_certain_first()
    buckets, similarity = plan.buckets, plan.similarity
    winners = plan.winners  # the walks and the sample add the rest
    lows = np.array([bucket.low for bucket in buckets])
    wanted = np.array(
        [b for b, bucket in enumerate(buckets) if b not in winners and len(bucket.members)], dtype=np.int64
    )
    if len(wanted):
        floors = _floors(pool, most_certain, excluded_rows, query, lows, wanted)
        caps = np.full(len(buckets), -np.inf)  # -inf: not walked (already won, or no sample to cap it)
        for b in wanted:
            floor = floors[b] if not np.isnan(floors[b]) else sample.uncertainty[buckets[b].members].min()
            caps[b] = uncertainty_limit(float(floor), ratio)
        for b, row in _walk(pool, most_complex, excluded_rows, query, lows, caps).items():
            winners[b] = (pool.ids[row], float(pool.vectors[row] @ query))
    for b, bucket in enumerate(buckets):  # never reached: the sample decides
        if b not in winners and len(bucket.members):
            row = pick_in_bucket(
                bucket.members, similarity, sample.uncertainty, sample.complexity, sample.keys, ratio
            )
            winners[b] = (sample.ids[row], float(similarity[row]))
    return [SublinearPick(winners[b][0], winners[b][1], b) for b in sorted(winners)]
