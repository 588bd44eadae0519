"""HashEE's token-level exit: one BERT layer that updates only the active tokens.

Active tokens (``active``: flat indices into batch × length) compute queries, attention over
every token's keys and values in their own sequence (padded keys masked by ``key_bias``, the
additive [batch, 1, 1, length] bias), the output projection and the feed-forward. Every other
token's hidden state is copied through unchanged.
"""

import math
from functools import cache
from typing import Protocol

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import nn


class Layer(Protocol):
    """The weights of one BERT layer, as ``LayerWeights`` holds them."""

    heads: int
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    attention_out: nn.Linear
    attention_norm: nn.LayerNorm
    ffn_in: nn.Linear
    ffn_out: nn.Linear
    ffn_norm: nn.LayerNorm


class LayerWeights(nn.Module):
    """The weights of one BERT layer under the names ``Layer`` reads; the early-exit model's
    ``EncoderLayer`` adds its forward to them, and the bench draws them at random."""

    def __init__(self, hidden: int, heads: int, ffn: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn_in = nn.Linear(hidden, ffn)
        self.ffn_out = nn.Linear(ffn, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)


def _finish(layer: Layer, context: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Output projection, residual and norm, then the feed-forward with its residual and norm."""
    attended = layer.attention_norm(layer.attention_out(context) + tokens)
    return layer.ffn_norm(layer.ffn_out(F.gelu(layer.ffn_in(attended))) + attended)


def _heads(layer: Layer, x: torch.Tensor) -> torch.Tensor:
    batch, length, width = x.shape
    return x.view(batch, length, layer.heads, width // layer.heads).transpose(1, 2)


def reference(layer: Layer, hidden: torch.Tensor, key_bias: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """The whole layer on every token, then keep its output at the active tokens only."""
    batch, length, width = hidden.shape
    scores = _heads(layer, layer.query(hidden)) @ _heads(layer, layer.key(hidden)).transpose(-1, -2)
    weights = torch.softmax(scores / math.sqrt(width // layer.heads) + key_bias, dim=-1)
    context = (weights @ _heads(layer, layer.value(hidden))).transpose(1, 2).reshape(batch, length, width)
    updated = _finish(layer, context, hidden).reshape(batch * length, width)
    flat = hidden.reshape(batch * length, width)
    return flat.index_copy(0, active, updated.index_select(0, active)).view(batch, length, width)


def fast_cpu(layer: Layer, hidden: torch.Tensor, key_bias: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Queries, attention rows, projection and feed-forward for the active tokens only: each
    sequence's active tokens are packed to the front of a [batch, most active] block."""
    batch, length, width = hidden.shape
    flat = hidden.reshape(batch * length, width)
    row = active // length
    per_row = torch.bincount(row, minlength=batch)
    slot = torch.arange(len(active)) - (torch.cumsum(per_row, 0) - per_row)[row]  # rank within its row
    packed = torch.zeros(batch, int(per_row.max()) if len(active) else 0, width, dtype=hidden.dtype)
    tokens = flat.index_select(0, active)
    packed[row, slot] = layer.query(tokens)
    scores = _heads(layer, packed) @ _heads(layer, layer.key(hidden)).transpose(-1, -2)
    weights = torch.softmax(scores / math.sqrt(width // layer.heads) + key_bias, dim=-1)
    context = (weights @ _heads(layer, layer.value(hidden))).transpose(1, 2)[row, slot].reshape(-1, width)
    return flat.index_copy(0, active, _finish(layer, context, tokens)).view(batch, length, width)


def _attention_kernel(
    queries, keys, values, key_bias, active, out, length, width, head_width, scale,
    BLOCK_KEYS: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One program per (active token, head): its query against all keys of its sequence,
    one softmax over the whole (padded to BLOCK_KEYS) row."""
    token = tl.program_id(0)
    head = tl.program_id(1)
    flat = tl.load(active + token)
    sequence = flat // length
    d = tl.arange(0, BLOCK_D)
    j = tl.arange(0, BLOCK_KEYS)
    in_d = d < head_width
    in_j = j < length
    column = head * head_width + d
    q = tl.load(queries + token * width + column, mask=in_d, other=0.0)
    rows = (sequence * length + j).to(tl.int64)[:, None] * width + column[None, :]
    both = in_j[:, None] & in_d[None, :]
    k = tl.load(keys + rows, mask=both, other=0.0)
    scores = tl.sum(k * q[None, :], axis=1) * scale + tl.load(key_bias + sequence * length + j, mask=in_j, other=0.0)
    scores = tl.where(in_j, scores, -float("inf"))
    weights = tl.exp(scores - tl.max(scores, axis=0))
    weights = weights / tl.sum(weights, axis=0)
    v = tl.load(values + rows, mask=both, other=0.0)
    tl.store(out + token * width + column, tl.sum(v * weights[:, None], axis=0), mask=in_d)


@cache
def _jit(kernel):
    """Compiled on first use, so a TRITON_INTERPRET set after import still counts."""
    return triton.jit(kernel)


def triton_gpu(layer: Layer, hidden: torch.Tensor, key_bias: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Attention in Triton; the projections stay dense matrix products (cuBLAS on a GPU)."""
    batch, length, width = hidden.shape
    head_width = width // layer.heads
    flat = hidden.reshape(batch * length, width)
    tokens = flat.index_select(0, active)
    queries = layer.query(tokens).contiguous()
    keys = layer.key(flat).contiguous()
    values = layer.value(flat).contiguous()
    context = torch.empty_like(queries)
    if len(active):
        _jit(_attention_kernel)[(len(active), layer.heads)](
            queries, keys, values, key_bias.reshape(batch, length).contiguous(), active, context,
            length, width, head_width, 1.0 / math.sqrt(head_width),
            BLOCK_KEYS=triton.next_power_of_2(length), BLOCK_D=triton.next_power_of_2(head_width),
        )
    return flat.index_copy(0, active, _finish(layer, context, tokens)).view(batch, length, width)
