"""The early-exit test over one layer's logits: entropy below a threshold, or patience.

For ``logits`` [rows, labels] and each row's previous prediction and how many layers in a row
it has stood, return each row's entropy (nats), prediction (argmax, first on ties), the new
streak, and whether it exits: entropy < ``entropy_threshold`` (when given) or streak ≥
``patience`` (when given). A row's first layer has previous prediction -1.
"""

from functools import cache

import numpy as np
import torch
import triton
import triton.language as tl

# The numpy paths live with the cascade, which must run where only numpy does (inside Triton).
from kernels.exit_cascade import ExitDecision, fast_cpu, reference
from kernels.exit_cascade import decide as _decide

__all__ = ["ExitDecision", "fast_cpu", "reference", "triton_gpu"]


def _exit_test_kernel(
    logits, entropy_out, prediction_out, rows, labels, stride, BLOCK_ROWS: tl.constexpr, BLOCK_LABELS: tl.constexpr
):
    row = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    label = tl.arange(0, BLOCK_LABELS)
    inside = (row[:, None] < rows) & (label[None, :] < labels)
    x = tl.load(logits + row[:, None] * stride + label[None, :], mask=inside, other=0.0).to(tl.float32)
    x = tl.where(label[None, :] < labels, x, -float("inf"))  # padded labels never win or weigh
    z = x - tl.max(x, axis=1)[:, None]
    weights = tl.exp(z)
    total = tl.sum(weights, axis=1)
    entropy = tl.log(total) - tl.sum(tl.where(inside, z, 0.0) * weights, axis=1) / total
    tl.store(entropy_out + row, entropy, mask=row < rows)
    # First label at the maximum, like numpy's argmax.
    first = tl.min(tl.where(inside & (z == 0.0), label[None, :], BLOCK_LABELS), axis=1)
    tl.store(prediction_out + row, first.to(tl.int64), mask=row < rows)


@cache
def _jit(kernel):
    """Compiled on first use, so a TRITON_INTERPRET set after import still counts."""
    return triton.jit(kernel)


def triton_gpu(logits, previous, unchanged, entropy_threshold=None, patience=None, device="cuda") -> ExitDecision:
    tensor = torch.as_tensor(np.ascontiguousarray(logits)).to(device)
    rows, labels = tensor.shape
    entropy = torch.empty(rows, dtype=torch.float32, device=device)
    prediction = torch.empty(rows, dtype=torch.int64, device=device)
    block_rows = 16
    _jit(_exit_test_kernel)[(triton.cdiv(rows, block_rows),)](
        tensor, entropy, prediction, rows, labels, labels,
        BLOCK_ROWS=block_rows, BLOCK_LABELS=triton.next_power_of_2(labels),
    )
    return _decide(
        entropy.cpu().numpy().astype(np.float64), prediction.cpu().numpy(), previous, unchanged,
        entropy_threshold, patience,
    )
