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
    similarity: np.ndarray  # float32 [n], what the buckets were built from


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


def limits(floors: np.ndarray, ratio: float) -> np.ndarray:
    """The λ filter's inclusive upper bound on uncertainty from each bucket's minimum."""
    return ratio * floors * (1 + RATIO_SLACK) + RATIO_SLACK


def _check(k: int, ratio: float) -> None:
    if k < 1:
        raise ValueError("k must be at least 1")
    if ratio < 1:
        raise ValueError("the uncertainty ratio λ must be at least 1")


# --- reference: a full sort, then a Python loop; the specification in code ---------------


def select_reference(
    similarity: np.ndarray,
    uncertainty: np.ndarray,
    complexity: np.ndarray,
    keys: np.ndarray,
    k: int,
    ratio: float,
    equal_count: bool = False,
) -> np.ndarray:
    _check(k, ratio)
    n = len(similarity)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((keys, similarity))
    if equal_count:
        counts = [n]
    else:
        counts = np.bincount(positions(similarity, k), minlength=k).tolist()
    interval_start = np.concatenate([[0], np.cumsum(counts)])
    picks = []
    for bucket in plan_buckets(counts, k, equal_count):
        offset = interval_start[bucket.interval]
        members = order[offset + bucket.start : offset + bucket.end].tolist()
        floor = min(uncertainty[i] for i in members)
        limit = limits(np.array([floor]), ratio)[0]
        kept = [i for i in members if uncertainty[i] <= limit]
        picks.append(max(kept, key=lambda i: (complexity[i], similarity[i], -keys[i])))
    return np.array(picks, dtype=np.int64)


def reference(vectors, query, uncertainty, complexity, keys, k, ratio, equal_count=False) -> Selection:
    similarity = (vectors @ query).astype(np.float32)
    return Selection(select_reference(similarity, uncertainty, complexity, keys, k, ratio, equal_count), similarity)


# --- fast CPU path: one parallel pass over the vectors, then two over the n scalars -------
# numba: numpy's matrix-vector product measured about 1.5x a plain read of the vectors here,
# and each numpy pass over n scalars costs a separate sweep of memory.

# Reassociation lets LLVM vectorise the dot product's sum; nothing else is relaxed.
_SUM_IN_ANY_ORDER = {"reassoc", "contract"}
_CHUNK = 4096


@numba.njit(parallel=True, fastmath=_SUM_IN_ANY_ORDER, cache=True)
def _similarity_and_range(vectors, query):
    """Similarity of every row, and its lowest and highest value, in one read of ``vectors``."""
    n, d = vectors.shape
    similarity = np.empty(n, dtype=np.float32)
    chunks = (n + _CHUNK - 1) // _CHUNK
    lows = np.full(chunks, np.inf, dtype=np.float32)
    highs = np.full(chunks, -np.inf, dtype=np.float32)
    for chunk in numba.prange(chunks):
        low, high = np.float32(np.inf), np.float32(-np.inf)
        for row in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            total = np.float32(0.0)
            for col in range(d):
                total += vectors[row, col] * query[col]
            similarity[row] = total
            low, high = min(low, total), max(high, total)
        lows[chunk], highs[chunk] = low, high
    return similarity, lows.min(), highs.max()


@numba.njit(parallel=True, cache=True)
def _intervals(similarity, uncertainty, low, width, k):
    """Each row's equal-width interval, with ``positions``' float32 arithmetic (an infinite
    width puts every row in interval 0); each interval's size and least uncertainty."""
    n = len(similarity)
    position = np.empty(n, dtype=np.int32)
    chunks = (n + _CHUNK - 1) // _CHUNK
    counts = np.zeros((chunks, k), dtype=np.int64)
    floors = np.full((chunks, k), np.inf)
    scale = np.float32(k)
    for chunk in numba.prange(chunks):
        for row in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            p = min(int(np.floor((similarity[row] - low) / width * scale)), k - 1)
            position[row] = p
            counts[chunk, p] += 1
            floors[chunk, p] = min(floors[chunk, p], uncertainty[row])
    total, floor = np.zeros(k, dtype=np.int64), np.full(k, np.inf)
    for chunk in range(chunks):
        for p in range(k):
            total[p] += counts[chunk, p]
            floor[p] = min(floor[p], floors[chunk, p])
    return position, total, floor


@numba.njit(cache=True)
def _bucket(row, similarity, keys, position, first_of_interval, cut_interval, cut_value, cut_key):
    p = position[row]
    bucket = first_of_interval[p]
    for c in range(len(cut_interval)):
        if p == cut_interval[c] and (
            similarity[row] > cut_value[c] or (similarity[row] == cut_value[c] and keys[row] >= cut_key[c])
        ):
            bucket += 1
    return bucket


@numba.njit(cache=True)
def _floors(similarity, keys, uncertainty, position, first_of_interval, cut_interval, cut_value, cut_key, count):
    """Each bucket's least uncertainty, where some interval holds several buckets."""
    floors = np.full(count, np.inf)
    for row in range(len(similarity)):
        b = _bucket(row, similarity, keys, position, first_of_interval, cut_interval, cut_value, cut_key)
        floors[b] = min(floors[b], uncertainty[row])
    return floors


@numba.njit(cache=True)
def _beats(row, held, similarity, complexity, keys):
    """The selection's order: more complex, then more similar, then smaller key."""
    if held < 0 or complexity[row] > complexity[held]:
        return True
    if complexity[row] < complexity[held]:
        return False
    if similarity[row] != similarity[held]:
        return similarity[row] > similarity[held]
    return keys[row] < keys[held]


@numba.njit(parallel=True, cache=True)
def _winners(
    similarity, uncertainty, complexity, keys, position, first_of_interval, cut_interval, cut_value, cut_key, limit
):
    """Per bucket, the kept row that wins the selection's order (per chunk, then across chunks)."""
    n, buckets = len(similarity), len(limit)
    chunks = (n + _CHUNK - 1) // _CHUNK
    best = np.full((chunks, buckets), -1, dtype=np.int64)
    for chunk in numba.prange(chunks):
        for row in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
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


def _thresholds(values: np.ndarray, member_keys: np.ndarray, ranks: list[int]) -> list[tuple[float, int]]:
    """The (similarity, key) at each rank of the rank order, by selection rather than a sort."""
    at = np.partition(values, ranks)[ranks]
    result = []
    for rank, value in zip(ranks, at, strict=True):
        below = int(np.count_nonzero(values < value))
        tied = np.sort(member_keys[values == value])
        result.append((value, int(tied[rank - below])))
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
) -> np.ndarray:
    n = len(similarity)
    # As numpy computes positions: the width rounds to float32; one interval when there is no width.
    width = np.float32(np.inf) if equal_count or high == low else np.float32(high - low)
    intervals = 1 if equal_count else k
    position, counts, interval_floors = _intervals(similarity, uncertainty, np.float32(low), width, intervals)
    plan = plan_buckets([n] if equal_count else counts.tolist(), k, equal_count)
    first_of_interval = np.zeros(intervals, dtype=np.int64)
    for index in reversed(range(len(plan))):
        first_of_interval[plan[index].interval] = index
    cuts: list[tuple[int, float, int]] = []
    for interval in sorted({b.interval for b in plan if b.start > 0}):
        inside = position == interval
        ranks = [b.start for b in plan if b.interval == interval and b.start > 0]
        cuts += [(interval, v, key) for v, key in _thresholds(similarity[inside], keys[inside], ranks)]
    cut_arrays = (
        np.array([c[0] for c in cuts], dtype=np.int32),
        np.array([c[1] for c in cuts], dtype=np.float32),
        np.array([c[2] for c in cuts], dtype=np.int64),
    )
    layout = (position, first_of_interval, *cut_arrays)
    if len(plan) == intervals and all(b.start == 0 for b in plan):  # each interval one bucket: the common case
        floors = interval_floors
    else:
        floors = _floors(similarity, keys, uncertainty, *layout, len(plan))
    return _winners(similarity, uncertainty, complexity, keys, *layout, limits(floors, ratio))


def _as_pool(uncertainty, complexity, keys):
    return (
        np.ascontiguousarray(uncertainty, dtype=np.float64),
        np.ascontiguousarray(complexity, dtype=np.float64),
        np.ascontiguousarray(keys, dtype=np.int64),
    )


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
    return _select_with_range(similarity, low, high, *_as_pool(uncertainty, complexity, keys), k, ratio, equal_count)


def fast_cpu(vectors, query, uncertainty, complexity, keys, k, ratio, equal_count=False) -> Selection:
    _check(k, ratio)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(vectors) == 0:
        return Selection(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
    similarity, low, high = _similarity_and_range(vectors, np.ascontiguousarray(query, dtype=np.float32))
    picks = _select_with_range(
        similarity, float(low), float(high), *_as_pool(uncertainty, complexity, keys), k, ratio, equal_count
    )
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
        tile = tl.load(vectors + row_offset + cols[None, :], mask=(rows[:, None] < n) & (cols[None, :] < d), other=0.0)
        total += tl.sum(tile * tl.load(query + cols, mask=cols < d, other=0.0)[None, :], axis=1)
    tl.store(out + rows, total, mask=rows < n)


def _position_kernel(similarity, out, n, low, width, k, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    s = tl.load(similarity + rows, mask=rows < n, other=0.0)
    # div_rn: correctly rounded, as numpy divides; plain '/' may be approximate on a GPU.
    scaled = tl.math.div_rn(s - low, width) * k
    tl.store(out + rows, tl.minimum(tl.floor(scaled).to(tl.int32), k - 1), mask=rows < n)


def _bucket_kernel(
    similarity, keys, position, uncertainty, first_of_interval, cut_interval, cut_value, cut_key,
    bucket_out, floor_out, n, cuts, buckets, BLOCK: tl.constexpr,
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
    similarity, uncertainty, complexity, keys, bucket_of, limit,
    best_complexity, best_similarity, best_key, best_row, n, buckets, BLOCK: tl.constexpr,
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


def _thresholds_torch(values: torch.Tensor, member_keys: torch.Tensor, ranks: list[int]) -> list[tuple[float, int]]:
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
            _jit(_position_kernel)[grid](similarity, position, n, low, float(np.float32(high - low)), k, BLOCK=_BLOCK)
    counts = [n] if equal_count else torch.bincount(position, minlength=k).tolist()
    plan = plan_buckets(counts, k, equal_count)
    first_of_interval = [0] * len(counts)
    for index in reversed(range(len(plan))):
        first_of_interval[plan[index].interval] = index
    cuts: list[tuple[int, float, int]] = []
    for interval in sorted({b.interval for b in plan if b.start > 0}):
        members = position == interval
        ranks = [b.start for b in plan if b.interval == interval and b.start > 0]
        cuts += [(interval, v, key) for v, key in _thresholds_torch(similarity[members], keys[members], ranks)]
    cut_interval = torch.tensor([c[0] for c in cuts] or [0], dtype=torch.int32, device=device)
    cut_value = torch.tensor([c[1] for c in cuts] or [0.0], dtype=torch.float32, device=device)
    cut_key = torch.tensor([c[2] for c in cuts] or [0], dtype=torch.int64, device=device)
    buckets = len(plan)
    bucket = torch.empty(n, dtype=torch.int32, device=device)
    floors = torch.empty((grid[0], buckets), dtype=torch.float64, device=device)
    _jit(_bucket_kernel)[grid](
        similarity, keys, position, uncertainty,
        torch.tensor(first_of_interval, dtype=torch.int32, device=device), cut_interval, cut_value, cut_key,
        bucket, floors, n, len(cuts), buckets, BLOCK=_BLOCK,
    )
    limit = limits(floors.min(dim=0).values, ratio)
    partial_c = torch.empty((grid[0], buckets), dtype=torch.float64, device=device)
    partial_s = torch.empty((grid[0], buckets), dtype=torch.float32, device=device)
    partial_key = torch.empty((grid[0], buckets), dtype=torch.int64, device=device)
    partial_row = torch.empty((grid[0], buckets), dtype=torch.int64, device=device)
    _jit(_best_kernel)[grid](
        similarity, uncertainty, complexity, keys, bucket, limit,
        partial_c, partial_s, partial_key, partial_row, n, buckets, BLOCK=_BLOCK,
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


def triton_gpu(vectors, query, uncertainty, complexity, keys, k, ratio, equal_count=False, device="cuda") -> Selection:
    def to(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array).to(device)

    similarity = similarity_triton(to(vectors), to(query))
    picks = select_triton(similarity, to(uncertainty), to(complexity), to(keys), k, ratio, equal_count)
    return Selection(picks, similarity.cpu().numpy())
