"""The one place that picks an implementation: Triton on a CUDA device, the fast CPU path
otherwise. Callers pass host arrays and get host arrays back."""

import numpy as np
import torch

from kernels import active_attention, bucketed_selection, exit_test


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
) -> bucketed_selection.Selection:
    implementation = bucketed_selection.triton_gpu if on_gpu() else bucketed_selection.fast_cpu
    return implementation(vectors, query, uncertainty, complexity, keys, k, ratio, equal_count)


def warm_up() -> None:
    """Compile (or load from numba's cache) the selection on a tiny pool, so that a service's
    first call does not pay for it."""
    rows = np.eye(2, 4, dtype=np.float32)
    select_buckets(rows, rows[0], np.zeros(2), np.ones(2), np.arange(2), 2, 1.2)


def decide_exits(
    logits: np.ndarray,
    previous: np.ndarray,
    unchanged: np.ndarray,
    entropy_threshold: float | None = None,
    patience: int | None = None,
) -> exit_test.ExitDecision:
    implementation = exit_test.triton_gpu if on_gpu() else exit_test.fast_cpu
    return implementation(logits, previous, unchanged, entropy_threshold, patience)


def active_layer(
    layer: active_attention.Layer, hidden: torch.Tensor, key_bias: torch.Tensor, active: torch.Tensor
) -> torch.Tensor:
    """On whatever device ``hidden`` is on; Triton where that is a CUDA device."""
    implementation = active_attention.triton_gpu if hidden.is_cuda else active_attention.fast_cpu
    return implementation(layer, hidden, key_bias, active)
