"""RoSE's exact orchestration as one kernel: similarity, buckets by rank, λ filter, argmax.

Given a pool (``vectors`` [n, d] float32, ``uncertainty`` and ``complexity`` float64, ``keys``
int64, distinct) and a unit ``query``, return one pool row per bucket, least similar bucket
first, and the similarity array the buckets were built from.

The rules (the experience service's exact algorithm, ties included):
- rank order is similarity ascending, exact ties by key;
- equal width: k equal intervals from the lowest similarity to the highest, computed as
  ``floor((s - low) / (high - low) * k)`` in float32, the highest closing the last interval;
  empty intervals are dropped, then the largest bucket (the least similar among equals) is
  halved in rank order, the more similar half taking the odd member, until there are k or
  none has two members;
- equal count: min(k, n) runs of the rank order, the first ones one longer;
- in each bucket keep members whose uncertainty is at most λ·min·(1 + RATIO_SLACK) + RATIO_SLACK,
  then take the most complex; ties go to the more similar, then to the smaller key.

Every bucket is a run of the rank order, so it is named by its interval and a range of ranks
within that interval. Only a bucket that starts inside an interval needs a rank selection to
find where it starts: a threshold (similarity, key) that its first member is.

Paths: ``reference`` (the specification), ``fast_cpu`` (numba, float32 rows),
``fast_cpu_compact`` (numba, a scan of int16 codes with exact floats where they decide; the
same picks as fast_cpu) and ``triton_gpu``.
"""

import math
from dataclasses import dataclass
from functools import cache

import numba
import numpy as np
import torch
import triton
import triton.language as tl

# Relative slack on λ·min so that float noise never drops the bucket's own minimum.
RATIO_SLACK = 1e-9


@dataclass(frozen=True)
class Selection:
    picks: np.ndarray  # int64 pool rows, one per bucket; picks[b] is bucket b's
    # float32 [n], what the buckets were built from (the compact path: exact at the picks and
    # wherever a value decided something, within the row's bound elsewhere)
    similarity: np.ndarray


@dataclass(frozen=True)
class Bucket:
    interval: int  # equal-width interval (always 0 for equal count)
    start: int  # first rank within the interval
    end: int  # one past the last rank within the interval


def plan_buckets(counts: list[int], k: int, equal_count: bool) -> list[Bucket]:
    """The buckets as rank ranges, from the interval sizes alone (``counts`` has one entry for
    equal count: the pool size)."""
    if equal_count:
        (n,) = counts
        sizes = [len(part) for part in np.array_split(np.arange(n), min(k, n))]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        return [Bucket(0, int(starts[i]), int(starts[i + 1])) for i in range(len(sizes))]
    buckets = [Bucket(p, 0, c) for p, c in enumerate(counts) if c > 0]
    while len(buckets) < k:
        largest = max(range(len(buckets)), key=lambda i: (buckets[i].end - buckets[i].start, -i))
        b = buckets[largest]
        size = b.end - b.start
        if size < 2:
            break
        cut = b.start + size - math.ceil(size / 2)
        buckets[largest : largest + 1] = [Bucket(b.interval, b.start, cut), Bucket(b.interval, cut, b.end)]
    return buckets


def positions(similarity: np.ndarray, k: int) -> np.ndarray:
    """Equal-width interval of each similarity, in float32 exactly as the service computes it."""
    low, high = float(similarity.min()), float(similarity.max())
    if high == low:
        return np.zeros(len(similarity), dtype=np.int16)
    position = np.floor((similarity - low) / (high - low) * k).astype(np.int16)
    return np.minimum(position, k - 1)


def uncertainty_limit(floor, ratio: float):
    """The λ filter's inclusive upper bound on uncertainty in a bucket whose least is ``floor``
    (a float, or an array or tensor of bucket minima): RoSE's one definition, for every path."""
    return ratio * floor * (1 + RATIO_SLACK) + RATIO_SLACK


def _check(k: int, ratio: float) -> None:
    if k < 1:
        raise ValueError("k must be at least 1")
    if ratio < 1:
        raise ValueError("the uncertainty ratio λ must be at least 1")


# --- reference: a full sort, then a Python loop; the specification in code ---------------


def _reference_buckets(similarity, uncertainty, complexity, keys, k, ratio, equal_count):
    """Each bucket's (members, kept under the λ bound, the bound, the pick), as the spec reads."""
    _check(k, ratio)
    n = len(similarity)
    if n == 0:
        return
    order = np.lexsort((keys, similarity))
    if equal_count:
        counts = [n]
    else:
        counts = np.bincount(positions(similarity, k), minlength=k).tolist()
    interval_start = np.concatenate([[0], np.cumsum(counts)])
    for bucket in plan_buckets(counts, k, equal_count):
        offset = interval_start[bucket.interval]
        members = order[offset + bucket.start : offset + bucket.end].tolist()
        floor = min(uncertainty[i] for i in members)
        limit = uncertainty_limit(floor, ratio)
        kept = [i for i in members if uncertainty[i] <= limit]
        yield members, kept, limit, max(kept, key=lambda i: (complexity[i], similarity[i], -keys[i]))


def select_reference(
    similarity: np.ndarray,
    uncertainty: np.ndarray,
    complexity: np.ndarray,
    keys: np.ndarray,
    k: int,
    ratio: float,
    equal_count: bool = False,
) -> np.ndarray:
    buckets = _reference_buckets(similarity, uncertainty, complexity, keys, k, ratio, equal_count)
    return np.array([pick for *_, pick in buckets], dtype=np.int64)


@dataclass(frozen=True)
class BucketReason:
    """Why RoSE chose ``pick`` (a row of the arrays it was given) for its bucket."""

    pick: int
    similarity_low: float  # the bucket's similarity range
    similarity_high: float
    members: int
    min_uncertainty: float  # the bucket's least uncertainty
    uncertainty_bound: float  # λ × that: members above it were filtered out
    kept: int  # members within the bound
    complexity_rank: int  # 1 + members more complex than the pick (filtered ones included)


def explain_reference(
    similarity: np.ndarray,
    uncertainty: np.ndarray,
    complexity: np.ndarray,
    keys: np.ndarray,
    k: int,
    ratio: float,
    equal_count: bool = False,
) -> list[BucketReason]:
    """The reference selection, bucket by bucket, with what decided each pick; O(n log n)."""
    return [
        BucketReason(
            pick=int(pick),
            similarity_low=float(min(similarity[i] for i in members)),
            similarity_high=float(max(similarity[i] for i in members)),
            members=len(members),
            min_uncertainty=float(min(uncertainty[i] for i in members)),
            uncertainty_bound=float(limit),
            kept=len(kept),
            complexity_rank=1 + sum(complexity[i] > complexity[pick] for i in members),
        )
        for members, kept, limit, pick in _reference_buckets(
            similarity, uncertainty, complexity, keys, k, ratio, equal_count
        )
    ]


def reference(vectors, query, uncertainty, complexity, keys, k, ratio, equal_count=False) -> Selection:
    similarity = (vectors @ query).astype(np.float32)
    return Selection(
        select_reference(similarity, uncertainty, complexity, keys, k, ratio, equal_count), similarity
    )


# --- fast CPU path: one parallel pass over the vectors, then two over the n scalars -------
# numba: numpy's matrix-vector product measured about 1.5x a plain read of the vectors here,
# and each numpy pass over n scalars costs a separate sweep of memory.

# Reassociation lets LLVM vectorise the dot product's sum; nothing else is relaxed.
_SUM_IN_ANY_ORDER = {"reassoc", "contract"}
_CHUNK = 4096


@numba.njit(fastmath=_SUM_IN_ANY_ORDER, cache=True, nogil=True)
def _dot(vectors, row, query):
    """A row's similarity: the one definition every path uses, so their floats agree."""
    total = np.float32(0.0)
    for col in range(vectors.shape[1]):
        total += vectors[row, col] * query[col]
    return total


@numba.njit(parallel=True, cache=True, nogil=True)
def _similarity_of_rows(vectors, rows, query):
    similarity = np.empty(len(rows), dtype=np.float32)
    for i in numba.prange(len(rows)):
        similarity[i] = _dot(vectors, rows[i], query)
    return similarity


def similarity_of_rows(vectors: np.ndarray, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Similarity of some rows, read in place (no gathered copy of the rows)."""
    return _similarity_of_rows(
        vectors, np.ascontiguousarray(rows, dtype=np.int64), np.ascontiguousarray(query, dtype=np.float32)
    )


@numba.njit(parallel=True, cache=True, nogil=True)
def _similarity_and_range(vectors, query, excluded):
    """Similarity of every row, and the lowest and highest value of those not excluded, in one
    read of ``vectors``."""
    n = vectors.shape[0]
    similarity = np.empty(n, dtype=np.float32)
    chunks = (n + _CHUNK - 1) // _CHUNK
    lows = np.full(chunks, np.inf, dtype=np.float32)
    highs = np.full(chunks, -np.inf, dtype=np.float32)
    for chunk in numba.prange(chunks):
        low, high = np.float32(np.inf), np.float32(-np.inf)
        for row in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            total = _dot(vectors, row, query)
            similarity[row] = total
            if not _out(excluded, row):
                low, high = min(low, total), max(high, total)
        lows[chunk], highs[chunk] = low, high
    return similarity, lows.min(), highs.max()


@numba.njit(cache=True, nogil=True)
def _out(excluded, row):
    """Whether the row is masked out of the pool (``excluded`` is empty when none is)."""
    return len(excluded) > 0 and excluded[row]


@numba.njit(cache=True, nogil=True)
def _position(value, low, width, scale, k):
    return min(int(np.floor((value - low) / width * scale)), k - 1)


@numba.njit(cache=True, nogil=True)
def _merge_chunks(counts, floors):
    """Per-chunk interval sizes and least uncertainties, summed and minimised over the chunks."""
    chunks, k = counts.shape
    total, floor = np.zeros(k, dtype=np.int64), np.full(k, np.inf)
    for chunk in range(chunks):
        for p in range(k):
            total[p] += counts[chunk, p]
            floor[p] = min(floor[p], floors[chunk, p])
    return total, floor


@numba.njit(cache=True, nogil=True)
def _settled_position(settle, similarity, row, low, width, scale, k):
    """A row's interval from its estimate when its bound keeps it inside one interval;
    otherwise its similarity is computed exactly first (the compact path)."""
    vectors, query, exact, bounds, reach = settle
    if exact[row]:
        return _position(similarity[row], low, width, scale, k)
    reach_row = bounds[row] * reach
    p = max(_position(similarity[row] - reach_row, low, width, scale, k), 0)
    if p != _position(similarity[row] + reach_row, low, width, scale, k):
        similarity[row] = _dot(vectors, row, query)
        exact[row] = True
        p = _position(similarity[row], low, width, scale, k)
    return p


@numba.njit(parallel=True, cache=True, nogil=True)
def _intervals(similarity, uncertainty, excluded, low, width, k, settle=None):
    """Each row's equal-width interval, with ``positions``' float32 arithmetic (an infinite
    width puts every row in interval 0), -1 for excluded rows; each interval's size and least
    uncertainty. With
    ``settle`` (vectors, query, exact, bounds, reach), ``similarity`` holds estimates, and rows
    whose bound straddles an interval edge are computed exactly."""
    n = len(similarity)
    position = np.empty(n, dtype=np.int32)
    chunks = (n + _CHUNK - 1) // _CHUNK
    counts = np.zeros((chunks, k), dtype=np.int64)
    floors = np.full((chunks, k), np.inf)
    scale = np.float32(k)
    for chunk in numba.prange(chunks):
        for row in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            if _out(excluded, row):
                position[row] = -1
                continue
            if settle is None:
                p = _position(similarity[row], low, width, scale, k)
            else:
                p = _settled_position(settle, similarity, row, low, width, scale, k)
            position[row] = p
            counts[chunk, p] += 1
            floors[chunk, p] = min(floors[chunk, p], uncertainty[row])
    return (position, *_merge_chunks(counts, floors))


@numba.njit(cache=True, nogil=True)
def _bucket(row, similarity, keys, position, first_of_interval, cut_interval, cut_value, cut_key):
    p = position[row]
    bucket = first_of_interval[p]
    for c in range(len(cut_interval)):
        if p == cut_interval[c] and (
            similarity[row] > cut_value[c] or (similarity[row] == cut_value[c] and keys[row] >= cut_key[c])
        ):
            bucket += 1
    return bucket


@numba.njit(parallel=True, cache=True, nogil=True)
def _floors(
    similarity, keys, uncertainty, position, first_of_interval, cut_interval, cut_value, cut_key, count
):
    """Each bucket's least uncertainty, where some interval holds several buckets."""
    n = len(similarity)
    chunks = (n + _CHUNK - 1) // _CHUNK
    floors = np.full((chunks, count), np.inf)
    for chunk in numba.prange(chunks):
        for row in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            if position[row] < 0:
                continue
            b = _bucket(row, similarity, keys, position, first_of_interval, cut_interval, cut_value, cut_key)
            floors[chunk, b] = min(floors[chunk, b], uncertainty[row])
    result = np.full(count, np.inf)
    for chunk in range(chunks):
        for b in range(count):
            result[b] = min(result[b], floors[chunk, b])
    return result


@numba.njit(cache=True, nogil=True)
def _beats(row, held, similarity, complexity, keys):
    """The selection's order: more complex, then more similar, then smaller key."""
    if held < 0 or complexity[row] > complexity[held]:
        return True
    if complexity[row] < complexity[held]:
        return False
    if similarity[row] != similarity[held]:
        return similarity[row] > similarity[held]
    return keys[row] < keys[held]


@numba.njit(parallel=True, cache=True, nogil=True)
def _winners(
    similarity,
    uncertainty,
    complexity,
    keys,
    position,
    first_of_interval,
    cut_interval,
    cut_value,
    cut_key,
    limit,
):
    """Per bucket, the kept row that wins the selection's order (per chunk, then across chunks)."""
    n, buckets = len(similarity), len(limit)
    chunks = (n + _CHUNK - 1) // _CHUNK
    best = np.full((chunks, buckets), -1, dtype=np.int64)
    for chunk in numba.prange(chunks):
        for row in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            if position[row] < 0:
                continue
            b = _bucket(row, similarity, keys, position, first_of_interval, cut_interval, cut_value, cut_key)
            if uncertainty[row] <= limit[b] and _beats(row, best[chunk, b], similarity, complexity, keys):
                best[chunk, b] = row
    result = np.full(buckets, -1, dtype=np.int64)
    for chunk in range(chunks):
        for b in range(buckets):
            row = best[chunk, b]
            if row >= 0 and _beats(row, result[b], similarity, complexity, keys):
                result[b] = row
    return result


# A split bucket's cut is found without sorting its interval: the interval's rows are counted
# in _CUT_BINS bins of similarity, and only the rows of the bin holding the cut's rank (give or
# take a margin) are sorted.
_CUT_BINS = 1024


@numba.njit(parallel=True, cache=True, nogil=True)
def _histogram(similarity, position, interval, origin, step):
    """One interval's rows counted in bins of similarity, with each bin's least and greatest value."""
    n = len(similarity)
    chunks = (n + _CHUNK - 1) // _CHUNK
    counts = np.zeros((chunks, _CUT_BINS), dtype=np.int64)
    lows = np.full((chunks, _CUT_BINS), np.inf, dtype=np.float32)
    highs = np.full((chunks, _CUT_BINS), -np.inf, dtype=np.float32)
    for chunk in numba.prange(chunks):
        for row in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            if position[row] != interval:
                continue
            value = similarity[row]
            place = (value - origin) / step  # monotone in value, which is all a bin needs
            j = 0 if place < 0 else (_CUT_BINS - 1 if place >= _CUT_BINS - 1 else int(place))
            counts[chunk, j] += 1
            lows[chunk, j] = min(lows[chunk, j], value)
            highs[chunk, j] = max(highs[chunk, j], value)
    total = np.zeros(_CUT_BINS, dtype=np.int64)
    low = np.full(_CUT_BINS, np.inf, dtype=np.float32)
    high = np.full(_CUT_BINS, -np.inf, dtype=np.float32)
    for chunk in range(chunks):
        for j in range(_CUT_BINS):
            total[j] += counts[chunk, j]
            low[j] = min(low[j], lows[chunk, j])
            high[j] = max(high[j], highs[chunk, j])
    return total, low, high


@numba.njit(parallel=True, cache=True, nogil=True)
def _windows(similarity, position, interval, lowest, highest):
    """The interval's rows inside any window [lowest[w], highest[w]], and for each window how
    many of the interval's rows lie below it: one pass for all of an interval's cuts."""
    n, windows = len(similarity), len(lowest)
    chunks = (n + _CHUNK - 1) // _CHUNK
    found = np.zeros(chunks, dtype=np.int64)
    below = np.zeros((chunks, windows), dtype=np.int64)
    rows = np.empty(n, dtype=np.int64)  # each chunk fills the front of its own stretch
    for chunk in numba.prange(chunks):
        for row in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            if position[row] != interval:
                continue
            inside = False
            for w in range(windows):
                if similarity[row] < lowest[w]:
                    below[chunk, w] += 1
                elif similarity[row] <= highest[w]:
                    inside = True
            if inside:
                rows[chunk * _CHUNK + found[chunk]] = row
                found[chunk] += 1
    total = 0
    for chunk in range(chunks):
        for i in range(found[chunk]):
            rows[total + i] = rows[chunk * _CHUNK + i]
        total += found[chunk]
    return rows[:total], below.sum(axis=0)


@dataclass(frozen=True)
class _Settler:
    """The compact path's hook: computes chosen rows' similarity exactly, in place."""

    vectors: np.ndarray
    query: np.ndarray
    exact: np.ndarray  # bool [n]
    bounds: np.ndarray
    reach: np.float32  # |query|, so that a row's estimate is within bounds[row]·reach
    margin: float  # twice the largest bound: how far an estimated cut can sit from the exact one


def _cut_points(
    similarity,
    keys,
    position,
    interval: int,
    ranks: list[int],
    origin: float,
    step: float,
    settler: _Settler | None,
) -> list[tuple[float, int]]:
    """The (similarity, key) at each rank of an interval's rank order.

    With estimates, the value at a rank moves by at most the largest bound, so a margin of twice
    that around the bin holding the rank catches every row that could be there or swap sides."""
    counts, lows, highs = _histogram(similarity, position, interval, origin, step)
    bins = np.searchsorted(np.cumsum(counts), ranks, side="right")
    margin = np.float32(settler.margin if settler is not None else 0.0)
    # One float32 step further out, so that rounding the sums cannot narrow a window.
    lowest = np.nextafter(lows[bins] - margin, np.float32(-np.inf))
    highest = np.nextafter(highs[bins] + margin, np.float32(np.inf))
    rows, below = _windows(similarity, position, interval, lowest, highest)
    values = similarity[rows]  # before settling: window membership is by what the pass saw
    members = [rows[(values >= lo) & (values <= hi)] for lo, hi in zip(lowest, highest, strict=True)]
    if settler is not None:
        _settle_rows(settler.vectors, settler.query, similarity, settler.exact, rows)
    result = []
    for rank, inside, under in zip(ranks, members, below, strict=True):
        row = inside[np.lexsort((keys[inside], similarity[inside]))][rank - under]
        result.append((float(similarity[row]), int(keys[row])))
    return result


def _select_with_range(
    similarity: np.ndarray,
    low: float,
    high: float,
    uncertainty: np.ndarray,
    complexity: np.ndarray,
    keys: np.ndarray,
    k: int,
    ratio: float,
    equal_count: bool,
    excluded: np.ndarray,
    settler: _Settler | None = None,
) -> np.ndarray:
    """The picks, from every row's similarity (exact, or estimated with a ``settler``) and the
    pool's exact range (for equal count, any range: it only spaces the cut bins). Rows marked in
    ``excluded`` take no part."""
    n = len(similarity) - (int(np.count_nonzero(excluded)) if len(excluded) else 0)
    # As numpy computes positions: the width rounds to float32; one interval when there is no width.
    width = np.float32(np.inf) if equal_count or high == low else np.float32(high - low)
    intervals = 1 if equal_count else k
    settle = (
        None
        if settler is None
        else (settler.vectors, settler.query, settler.exact, settler.bounds, settler.reach)
    )
    position, counts, interval_floors = _intervals(
        similarity, uncertainty, excluded, np.float32(low), width, intervals, settle
    )
    plan = plan_buckets([n] if equal_count else counts.tolist(), k, equal_count)
    first_of_interval = np.zeros(intervals, dtype=np.int64)
    for index in reversed(range(len(plan))):
        first_of_interval[plan[index].interval] = index
    span = high - low if high > low else float(intervals)
    cuts: list[tuple[int, float, int]] = []
    for interval in sorted({b.interval for b in plan if b.start > 0}):
        ranks = [b.start for b in plan if b.interval == interval and b.start > 0]
        origin, step = low + interval * span / intervals, span / (intervals * _CUT_BINS)
        points = _cut_points(similarity, keys, position, interval, ranks, origin, step, settler)
        cuts += [(interval, value, key) for value, key in points]
    cut_arrays = (
        np.array([c[0] for c in cuts], dtype=np.int32),
        np.array([c[1] for c in cuts], dtype=np.float32),
        np.array([c[2] for c in cuts], dtype=np.int64),
    )
    layout = (position, first_of_interval, *cut_arrays)
    if len(plan) == intervals and all(
        b.start == 0 for b in plan
    ):  # each interval one bucket: the common case
        floors = interval_floors
    else:
        floors = _floors(similarity, keys, uncertainty, *layout, len(plan))
    limit = uncertainty_limit(floors, ratio)
    picks = _winners(similarity, uncertainty, complexity, keys, *layout, limit)
    if settler is not None:
        args = (settler.vectors, settler.query, similarity, settler.exact)
        _settle_rows(*args, picks[picks >= 0])
        if _settle_rivals(
            *args, settler.bounds, settler.reach, uncertainty, complexity, keys, *layout, limit, picks
        ):
            picks = _winners(similarity, uncertainty, complexity, keys, *layout, limit)
    return picks


def _as_pool(uncertainty, complexity, keys):
    return (
        np.ascontiguousarray(uncertainty, dtype=np.float64),
        np.ascontiguousarray(complexity, dtype=np.float64),
        np.ascontiguousarray(keys, dtype=np.int64),
    )


def _mask(excluded: np.ndarray | None, n: int) -> np.ndarray | None:
    """``excluded`` as the kernels take it (empty when nothing is), or None when it leaves no row."""
    if excluded is None:
        return _NOTHING_EXCLUDED
    if len(excluded) != n:
        raise ValueError(f"excluded has {len(excluded)} entries for {n} rows")
    return None if np.count_nonzero(excluded) == n else np.asarray(excluded, dtype=np.bool_)


_NOTHING_EXCLUDED = np.zeros(0, dtype=np.bool_)
_NO_PICKS = np.zeros(0, dtype=np.int64)


def select_fast(
    similarity: np.ndarray,
    uncertainty: np.ndarray,
    complexity: np.ndarray,
    keys: np.ndarray,
    k: int,
    ratio: float,
    equal_count: bool = False,
) -> np.ndarray:
    _check(k, ratio)
    if len(similarity) == 0:
        return np.zeros(0, dtype=np.int64)
    similarity = np.ascontiguousarray(similarity, dtype=np.float32)
    low, high = float(similarity.min()), float(similarity.max())
    pool = _as_pool(uncertainty, complexity, keys)
    return _select_with_range(similarity, low, high, *pool, k, ratio, equal_count, _NOTHING_EXCLUDED)


def fast_cpu(
    vectors, query, uncertainty, complexity, keys, k, ratio, equal_count=False, excluded=None
) -> Selection:
    """``excluded`` (bool [n]) masks rows out of the pool inside the passes: nothing is copied."""
    _check(k, ratio)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    mask = _mask(excluded, len(vectors))
    if len(vectors) == 0 or mask is None:
        return Selection(_NO_PICKS, np.zeros(0, dtype=np.float32))
    similarity, low, high = _similarity_and_range(
        vectors, np.ascontiguousarray(query, dtype=np.float32), mask
    )
    picks = _select_with_range(
        similarity,
        float(low),
        float(high),
        *_as_pool(uncertainty, complexity, keys),
        k,
        ratio,
        equal_count,
        mask,
    )
    return Selection(picks, similarity)


# --- compact CPU path: the scan reads int16 codes, exact floats only where they decide ----
# The codes are half the bytes of the float32 rows, and at 100k rows and more the scan is
# bound by reading memory. Each row's estimate comes with a bound on its distance from the
# float32 similarity (_dot's); a row is computed exactly only when, anywhere in its bound, it
# could land on the other side of something that decides: the pool's range, an interval edge,
# a split bucket's cut, or a winner's similarity among rows tied on complexity. So the picks
# are fast_cpu's, exactly.

_CODE_LIMIT = 32767


@dataclass(frozen=True)
class CompactRows:
    """Rows as int16 codes times a per-row float32 scale. For any query q, the similarity
    estimated from a row's codes is within ``bounds[row]·|q|`` of its float32 similarity."""

    codes: np.ndarray  # int16 [n, d]
    scales: np.ndarray  # float32 [n]
    bounds: np.ndarray  # float32 [n]

    def __len__(self) -> int:
        return len(self.scales)


def compact(vectors: np.ndarray) -> CompactRows:
    rows = np.asarray(vectors, dtype=np.float32)
    n, d = rows.shape
    peak = np.abs(rows).max(axis=1) if d else np.zeros(n, dtype=np.float32)
    scales = (peak / _CODE_LIMIT).astype(np.float32)
    divisor = np.where(scales > 0, scales, np.float32(1))[:, None]
    codes = np.clip(np.rint(rows / divisor), -_CODE_LIMIT, _CODE_LIMIT).astype(np.int16)
    decoded = codes * scales[:, None].astype(np.float64)  # exact in float64
    residual = np.linalg.norm(rows - decoded, axis=1)
    # float32 rounding of a d-term dot product, in any summation order, and of estimate ± bound,
    # stays under (d + 4)·2^-24 times |q| times the row's norm.
    rounding = (
        (d + 4)
        * 2.0**-24
        * (np.linalg.norm(rows.astype(np.float64), axis=1) + np.linalg.norm(decoded, axis=1))
    )
    bounds = ((residual + rounding) * (1 + 1e-6)).astype(np.float32)
    return CompactRows(codes, scales, bounds)


@numba.njit(parallel=True, fastmath=_SUM_IN_ANY_ORDER, cache=True, nogil=True)
def _estimates(codes, scales, bounds, query, reach, excluded):
    """Each row's estimate; the least estimate + bound and the greatest estimate - bound among
    the rows not excluded."""
    n, d = codes.shape
    estimate = np.empty(n, dtype=np.float32)
    chunks = (n + _CHUNK - 1) // _CHUNK
    ceilings = np.full(chunks, np.inf, dtype=np.float32)
    floors = np.full(chunks, -np.inf, dtype=np.float32)
    for chunk in numba.prange(chunks):
        ceiling, floor = np.float32(np.inf), np.float32(-np.inf)
        for row in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            total = np.float32(0.0)
            for col in range(d):
                total += np.float32(codes[row, col]) * query[col]
            value = total * scales[row]
            estimate[row] = value
            if not _out(excluded, row):
                reach_row = bounds[row] * reach
                ceiling, floor = min(ceiling, value + reach_row), max(floor, value - reach_row)
        ceilings[chunk], floors[chunk] = ceiling, floor
    return estimate, ceilings.min(), floors.max()


@numba.njit(parallel=True, cache=True, nogil=True)
def _settle_range(vectors, query, similarity, exact, bounds, reach, lowest_ceiling, highest_floor, excluded):
    """Compute exactly every row that could be the least or the most similar; their range is the pool's."""
    n = len(similarity)
    chunks = (n + _CHUNK - 1) // _CHUNK
    lows = np.full(chunks, np.inf, dtype=np.float32)
    highs = np.full(chunks, -np.inf, dtype=np.float32)
    for chunk in numba.prange(chunks):
        low, high = np.float32(np.inf), np.float32(-np.inf)
        for row in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            if _out(excluded, row):
                continue
            reach_row = bounds[row] * reach
            if similarity[row] - reach_row <= lowest_ceiling or similarity[row] + reach_row >= highest_floor:
                value = _dot(vectors, row, query)
                similarity[row] = value
                exact[row] = True
                low, high = min(low, value), max(high, value)
        lows[chunk], highs[chunk] = low, high
    return lows.min(), highs.max()


@numba.njit(cache=True, nogil=True)
def _settle_rows(vectors, query, similarity, exact, rows):
    for row in rows:
        if not exact[row]:
            similarity[row] = _dot(vectors, row, query)
            exact[row] = True


@numba.njit(parallel=True, cache=True, nogil=True)
def _settle_rivals(
    vectors,
    query,
    similarity,
    exact,
    bounds,
    reach,
    uncertainty,
    complexity,
    keys,
    position,
    first_of_interval,
    cut_interval,
    cut_value,
    cut_key,
    limit,
    winners,
):
    """Compute exactly every kept row tied with its bucket's winner on complexity whose bound
    reaches the winner's (exact) similarity: only those can win the similarity tie-break."""
    n = len(similarity)
    chunks = (n + _CHUNK - 1) // _CHUNK
    settled = np.zeros(chunks, dtype=np.int64)
    # A winner is its bucket's most complex kept row, so most rows fall below every winner.
    least = np.inf
    for winner in winners:
        if winner >= 0:
            least = min(least, complexity[winner])
    for chunk in numba.prange(chunks):
        for row in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            if complexity[row] < least or exact[row] or position[row] < 0:
                continue
            b = _bucket(row, similarity, keys, position, first_of_interval, cut_interval, cut_value, cut_key)
            winner = winners[b]
            if (
                winner >= 0
                and uncertainty[row] <= limit[b]
                and complexity[row] == complexity[winner]
                and similarity[row] + bounds[row] * reach >= similarity[winner]
            ):
                similarity[row] = _dot(vectors, row, query)
                exact[row] = True
                settled[chunk] += 1
    return settled.sum()


def _scan(vectors, rows: CompactRows, query, excluded: np.ndarray):
    """The compact paths' common start: contiguous float32 inputs, ``reach`` (|query|, float32 so
    that estimate ± bound is the arithmetic positions use) and ``_estimates``' results."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    query = np.ascontiguousarray(query, dtype=np.float32)
    reach = np.float32(np.linalg.norm(query.astype(np.float64)) * (1 + 1e-6))
    return vectors, query, reach, *_estimates(rows.codes, rows.scales, rows.bounds, query, reach, excluded)


def top_candidates_compact(
    vectors, rows: CompactRows, query, k: int, excluded: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Every row not excluded that can be among the k most similar to ``query``, with its float32
    similarity (``_dot``'s): the rows whose estimate + bound reaches the k-th largest estimate − bound."""
    n = len(rows)
    mask = _mask(excluded, n)
    if mask is None:
        return _NO_PICKS, np.zeros(0, dtype=np.float32)
    vectors, query, reach, estimate, _, _ = _scan(vectors, rows, query, mask)
    kept = n - (int(np.count_nonzero(mask)) if len(mask) else 0)
    reach_rows = rows.bounds * reach
    floors = estimate - reach_rows
    if len(mask):
        floors[mask] = -np.inf
    if k >= kept:
        candidates = np.flatnonzero(~mask) if len(mask) else np.arange(n)
    else:
        floor = np.partition(floors, n - k)[n - k]  # the k-th largest
        candidates = np.flatnonzero(estimate + reach_rows >= floor)
        if len(mask):
            candidates = candidates[~mask[candidates]]
    _settle_rows(vectors, query, estimate, np.zeros(n, dtype=np.bool_), candidates)
    return candidates, estimate[candidates]


def fast_cpu_compact(
    vectors,
    rows: CompactRows,
    query,
    uncertainty,
    complexity,
    keys,
    k,
    ratio,
    equal_count=False,
    excluded=None,
) -> Selection:
    """fast_cpu's picks from a scan of ``rows`` (``compact(vectors)``). The similarity returned is
    exact (fast_cpu's) at the picks and wherever it decided something, an estimate elsewhere.
    ``excluded`` (bool [n]) masks rows out of the pool inside the passes: nothing is copied."""
    _check(k, ratio)
    n = len(rows)
    mask = _mask(excluded, n)
    if n == 0 or mask is None:
        return Selection(_NO_PICKS, np.zeros(0, dtype=np.float32))
    vectors, query, reach, similarity, lowest_ceiling, highest_floor = _scan(vectors, rows, query, mask)
    settler = _Settler(
        vectors,
        query,
        np.zeros(n, dtype=np.bool_),
        rows.bounds,
        reach,
        2 * float(rows.bounds.max()) * float(reach),
    )
    if equal_count:  # no interval edges: the estimated range only spaces the cut bins
        low, high = float(lowest_ceiling), float(highest_floor)
    else:
        low32, high32 = _settle_range(
            vectors, query, similarity, settler.exact, rows.bounds, reach, lowest_ceiling, highest_floor, mask
        )
        low, high = float(low32), float(high32)
    pool = _as_pool(uncertainty, complexity, keys)
    picks = _select_with_range(similarity, low, high, *pool, k, ratio, equal_count, mask, settler)
    return Selection(picks, similarity)


# --- Triton: one pass over the vectors, then passes over n scalars -----------------------

_NO_ROW = torch.iinfo(torch.int64).max


@cache
def _jit(kernel):
    """Kernels are compiled on first use, so a TRITON_INTERPRET set after import still counts."""
    return triton.jit(kernel)


def _similarity_kernel(vectors, query, out, n, d, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_offset = rows.to(tl.int64)[:, None] * d
    total = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, d, BLOCK_D):
        cols = start + tl.arange(0, BLOCK_D)
        tile = tl.load(
            vectors + row_offset + cols[None, :], mask=(rows[:, None] < n) & (cols[None, :] < d), other=0.0
        )
        total += tl.sum(tile * tl.load(query + cols, mask=cols < d, other=0.0)[None, :], axis=1)
    tl.store(out + rows, total, mask=rows < n)


def _position_kernel(similarity, out, n, low, width, k, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    s = tl.load(similarity + rows, mask=rows < n, other=0.0)
    # div_rn: correctly rounded, as numpy divides; plain '/' may be approximate on a GPU.
    scaled = tl.math.div_rn(s - low, width) * k
    tl.store(out + rows, tl.minimum(tl.floor(scaled).to(tl.int32), k - 1), mask=rows < n)


def _bucket_kernel(
    similarity,
    keys,
    position,
    uncertainty,
    first_of_interval,
    cut_interval,
    cut_value,
    cut_key,
    bucket_out,
    floor_out,
    n,
    cuts,
    buckets,
    BLOCK: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = rows < n
    s = tl.load(similarity + rows, mask=inside, other=0.0)
    key = tl.load(keys + rows, mask=inside, other=0)
    pos = tl.load(position + rows, mask=inside, other=0)
    bucket = tl.load(first_of_interval + pos, mask=inside, other=0)
    for c in range(cuts):
        value = tl.load(cut_value + c)
        at_or_above = (s > value) | ((s == value) & (key >= tl.load(cut_key + c)))
        bucket += ((pos == tl.load(cut_interval + c)) & at_or_above).to(tl.int32)
    tl.store(bucket_out + rows, bucket, mask=inside)
    u = tl.load(uncertainty + rows, mask=inside, other=float("inf"))
    for b in range(buckets):
        tl.store(floor_out + tl.program_id(0) * buckets + b, tl.min(tl.where(bucket == b, u, float("inf"))))


def _best_kernel(
    similarity,
    uncertainty,
    complexity,
    keys,
    bucket_of,
    limit,
    best_complexity,
    best_similarity,
    best_key,
    best_row,
    n,
    buckets,
    BLOCK: tl.constexpr,
):
    """Per block and bucket, the kept row that wins every tie-break; reduced across blocks later."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = rows < n
    s = tl.load(similarity + rows, mask=inside, other=0.0)
    u = tl.load(uncertainty + rows, mask=inside, other=0.0)
    c = tl.load(complexity + rows, mask=inside, other=0.0)
    key = tl.load(keys + rows, mask=inside, other=0)
    bucket = tl.load(bucket_of + rows, mask=inside, other=-1)
    for b in range(buckets):
        candidate = (bucket == b) & (u <= tl.load(limit + b))
        top_c = tl.max(tl.where(candidate, c, -float("inf")))
        candidate = candidate & (c == top_c)
        top_s = tl.max(tl.where(candidate, s, -float("inf")))
        candidate = candidate & (s == top_s)
        low_key = tl.min(tl.where(candidate, key, 9223372036854775807))
        candidate = candidate & (key == low_key)
        slot = tl.program_id(0) * buckets + b
        tl.store(best_complexity + slot, top_c)
        tl.store(best_similarity + slot, top_s)
        tl.store(best_key + slot, low_key)
        tl.store(best_row + slot, tl.min(tl.where(candidate, rows.to(tl.int64), 9223372036854775807)))


_BLOCK = 1024


def _thresholds_torch(
    values: torch.Tensor, member_keys: torch.Tensor, ranks: list[int]
) -> list[tuple[float, int]]:
    result = []
    for rank in ranks:
        value = values.kthvalue(rank + 1).values
        below = int((values < value).sum())
        tied = member_keys[values == value].sort().values
        result.append((float(value), int(tied[rank - below])))
    return result


def select_triton(
    similarity: torch.Tensor,
    uncertainty: torch.Tensor,
    complexity: torch.Tensor,
    keys: torch.Tensor,
    k: int,
    ratio: float,
    equal_count: bool = False,
) -> np.ndarray:
    """Selection over tensors already on the kernel's device."""
    _check(k, ratio)
    n = len(similarity)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    device = similarity.device
    grid = (triton.cdiv(n, _BLOCK),)
    position = torch.zeros(n, dtype=torch.int32, device=device)
    if not equal_count:
        low, high = float(similarity.min()), float(similarity.max())
        if high > low:
            # The width rounds to float32 first, as numpy does with a Python float operand.
            _jit(_position_kernel)[grid](
                similarity, position, n, low, float(np.float32(high - low)), k, BLOCK=_BLOCK
            )
    counts = [n] if equal_count else torch.bincount(position, minlength=k).tolist()
    plan = plan_buckets(counts, k, equal_count)
    first_of_interval = [0] * len(counts)
    for index in reversed(range(len(plan))):
        first_of_interval[plan[index].interval] = index
    cuts: list[tuple[int, float, int]] = []
    for interval in sorted({b.interval for b in plan if b.start > 0}):
        members = position == interval
        ranks = [b.start for b in plan if b.interval == interval and b.start > 0]
        cuts += [
            (interval, v, key) for v, key in _thresholds_torch(similarity[members], keys[members], ranks)
        ]
    cut_interval = torch.tensor([c[0] for c in cuts] or [0], dtype=torch.int32, device=device)
    cut_value = torch.tensor([c[1] for c in cuts] or [0.0], dtype=torch.float32, device=device)
    cut_key = torch.tensor([c[2] for c in cuts] or [0], dtype=torch.int64, device=device)
    buckets = len(plan)
    bucket = torch.empty(n, dtype=torch.int32, device=device)
    floors = torch.empty((grid[0], buckets), dtype=torch.float64, device=device)
    _jit(_bucket_kernel)[grid](
        similarity,
        keys,
        position,
        uncertainty,
        torch.tensor(first_of_interval, dtype=torch.int32, device=device),
        cut_interval,
        cut_value,
        cut_key,
        bucket,
        floors,
        n,
        len(cuts),
        buckets,
        BLOCK=_BLOCK,
    )
    limit = uncertainty_limit(floors.min(dim=0).values, ratio)
    partial_c = torch.empty((grid[0], buckets), dtype=torch.float64, device=device)
    partial_s = torch.empty((grid[0], buckets), dtype=torch.float32, device=device)
    partial_key = torch.empty((grid[0], buckets), dtype=torch.int64, device=device)
    partial_row = torch.empty((grid[0], buckets), dtype=torch.int64, device=device)
    _jit(_best_kernel)[grid](
        similarity,
        uncertainty,
        complexity,
        keys,
        bucket,
        limit,
        partial_c,
        partial_s,
        partial_key,
        partial_row,
        n,
        buckets,
        BLOCK=_BLOCK,
    )
    # The same tie-breaks again, across blocks.
    candidate = partial_row != _NO_ROW
    top_c = torch.where(candidate, partial_c, -math.inf).max(dim=0).values
    candidate &= partial_c == top_c
    top_s = torch.where(candidate, partial_s, -math.inf).max(dim=0).values
    candidate &= partial_s == top_s
    low_key = torch.where(candidate, partial_key, _NO_ROW).min(dim=0).values
    candidate &= partial_key == low_key
    return torch.where(candidate, partial_row, _NO_ROW).min(dim=0).values.cpu().numpy()


def similarity_triton(vectors: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    n, d = vectors.shape
    out = torch.empty(n, dtype=torch.float32, device=vectors.device)
    _jit(_similarity_kernel)[(triton.cdiv(n, 64),)](vectors, query, out, n, d, BLOCK_N=64, BLOCK_D=128)
    return out


def triton_gpu(
    vectors, query, uncertainty, complexity, keys, k, ratio, equal_count=False, device="cuda"
) -> Selection:
    def to(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array).to(device)

    similarity = similarity_triton(to(vectors), to(query))
    picks = select_triton(similarity, to(uncertainty), to(complexity), to(keys), k, ratio, equal_count)
    return Selection(picks, similarity.cpu().numpy())
