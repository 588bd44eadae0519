"""The one place that picks an implementation: Triton on a CUDA device, the fast CPU path
otherwise. Callers pass host arrays and get host arrays back."""

import numba
import numpy as np
import torch

from kernels import active_attention, bucketed_selection, exit_rule


def on_gpu() -> bool:
    return torch.cuda.is_available()


def select_buckets(
    vectors: np.ndarray,
    query: np.ndarray,
    uncertainty: np.ndarray,
    complexity: np.ndarray,
    keys: np.ndarray,
    k: int,
    ratio: float,
    equal_count: bool = False,
    compact: bucketed_selection.CompactRows | None = None,
    excluded: np.ndarray | None = None,
) -> bucketed_selection.Selection:
    """``compact``, the vectors' int16 codes, lets the CPU path scan half the bytes; same picks.
    ``excluded`` (bool per row) masks rows out inside the CPU passes; the Triton path has no mask,
    so a masked selection runs on the CPU."""
    pool = (uncertainty, complexity, keys, k, ratio, equal_count)
    if on_gpu() and (excluded is None or not excluded.any()):
        return bucketed_selection.triton_gpu(vectors, query, *pool)
    if compact is not None:
        return bucketed_selection.fast_cpu_compact(vectors, compact, query, *pool, excluded)
    return bucketed_selection.fast_cpu(vectors, query, *pool, excluded)


def top_candidates(
    vectors: np.ndarray,
    query: np.ndarray,
    k: int,
    compact: bucketed_selection.CompactRows | None = None,
    excluded: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows not ``excluded`` that can be among the k most similar to ``query``, with their
    similarity: every such row, unless ``compact`` lets the scan rule most of them out from
    their int16 codes."""
    if compact is not None:
        return bucketed_selection.top_candidates_compact(vectors, compact, query, k, excluded)
    rows = np.arange(len(vectors)) if excluded is None else np.flatnonzero(~excluded)
    return rows, bucketed_selection.similarity_of_rows(vectors, rows, query)


def similarity_of_rows(vectors: np.ndarray, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Similarity of ``rows`` of ``vectors`` (the CPU's sublinear walks and probes)."""
    return bucketed_selection.similarity_of_rows(vectors, rows, query)


def parallel_calls_safe() -> bool:
    """Whether numba's threading layer takes parallel kernels from several threads at once (omp
    and tbb do; workqueue, its fallback, aborts the process). Ask after ``warm_up``."""
    return numba.threading_layer() != "workqueue"


def warm_up() -> None:
    """Compile (or load from numba's cache) the selection on a tiny pool, so that a service's
    first call does not pay for it."""
    rows = np.eye(3, 4, dtype=np.float32)
    pool = (np.zeros(3), np.ones(3), np.arange(3), 2, 1.2)
    for equal_count in (False, True):  # equal count on two buckets of three rows: a cut
        select_buckets(rows, rows[0], *pool, equal_count)
        select_buckets(rows, rows[0], *pool, equal_count, bucketed_selection.compact(rows))
        select_buckets(
            rows,
            rows[0],
            *pool,
            equal_count,
            bucketed_selection.compact(rows),
            np.array([0, 1, 0], dtype=bool),
        )
    top_candidates(rows, rows[0], 1, bucketed_selection.compact(rows))
    top_candidates(rows, rows[0], 1, bucketed_selection.compact(rows), np.array([0, 1, 0], dtype=bool))
    similarity_of_rows(rows, np.arange(2), rows[0])


def decide_exits(
    logits: np.ndarray,
    previous: np.ndarray,
    unchanged: np.ndarray,
    entropy_threshold: float | None = None,
    patience: int | None = None,
) -> exit_rule.ExitDecision:
    implementation = exit_rule.triton_gpu if on_gpu() else exit_rule.fast_cpu
    return implementation(logits, previous, unchanged, entropy_threshold, patience)


def active_layer(
    layer: active_attention.Layer, hidden: torch.Tensor, key_bias: torch.Tensor, active: torch.Tensor
) -> torch.Tensor:
    """On whatever device ``hidden`` is on; Triton where that is a CUDA device."""
    implementation = active_attention.triton_gpu if hidden.is_cuda else active_attention.fast_cpu
    return implementation(layer, hidden, key_bias, active)
