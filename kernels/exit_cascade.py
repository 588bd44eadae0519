"""The early-exit cascade in numpy alone: the exit test over one layer's logits, the rule that
applies a policy layer by layer, and the loop that shrinks the batch as rows leave.

It imports nothing but numpy and the standard library, because it runs in two places: in the
early-exit service (through ``services.earlyexit.core.policy``, with ``kernels.dispatch``'s
exit test) and inside Triton, where rendering the model repository copies this file next to the
cascade's ``model.py`` (a stock Triton image has numpy and nothing of rosemesh).

Policies travel as four numbers, as on the wire (rosemesh.earlyexit.v1.ExitMode): the mode,
and the static layer, entropy threshold (nats) or patience it uses; zeros for the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MODE_STATIC, MODE_DYNAMIC, MODE_PATIENCE, MODE_HASHEE = 1, 2, 3, 4
LAYERWISE_MODES = (MODE_STATIC, MODE_DYNAMIC, MODE_PATIENCE)


@dataclass(frozen=True)
class ExitDecision:
    exits: np.ndarray  # bool [rows]
    entropy: np.ndarray  # float64 [rows], nats
    prediction: np.ndarray  # int64 [rows]
    unchanged: np.ndarray  # int64 [rows], consecutive layers with the same prediction


def decide(entropy, prediction, previous, unchanged, entropy_threshold, patience) -> ExitDecision:
    """Exit where entropy < ``entropy_threshold`` (when given) or the prediction has stood for
    ``patience`` layers (when given); a row's first layer has previous prediction -1."""
    streak = np.where(prediction == previous, unchanged + 1, 0).astype(np.int64)
    exits = np.zeros(len(prediction), dtype=bool)
    if entropy_threshold is not None:
        exits |= entropy < entropy_threshold
    if patience is not None:
        exits |= streak >= patience
    return ExitDecision(exits, entropy, prediction.astype(np.int64), streak)


def reference(logits, previous, unchanged, entropy_threshold=None, patience=None) -> ExitDecision:
    """Softmax, then -Σ p log p with p clipped at 1e-12, in the logits' own precision."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
    entropy = -(probabilities * np.log(np.clip(probabilities, 1e-12, None))).sum(axis=-1)
    return decide(entropy.astype(np.float64), logits.argmax(axis=-1), previous, unchanged, entropy_threshold, patience)


def fast_cpu(logits, previous, unchanged, entropy_threshold=None, patience=None) -> ExitDecision:
    """Entropy as log Σe^z − Σ z·e^z / Σe^z over z = logits − max: no probabilities, no log per
    label. Float64 keeps it within 1e-5 of the reference's float32."""
    z = logits - logits.max(axis=-1, keepdims=True)
    z = z.astype(np.float64)
    weights = np.exp(z)
    total = weights.sum(axis=-1)
    entropy = np.log(total) - np.einsum("ij,ij->i", z, weights) / total
    return decide(entropy, logits.argmax(axis=-1), previous, unchanged, entropy_threshold, patience)


#: (logits, previous predictions, unchanged streaks, entropy_threshold=, patience=) → ExitDecision.
ExitTest = Callable[..., ExitDecision]


@dataclass(frozen=True)
class WirePolicy:
    mode: int
    static_layer: int = 0
    entropy_threshold: float = 0.0
    patience: int = 0

    def check(self, depth: int) -> None:
        if self.mode not in LAYERWISE_MODES:
            raise ValueError(f"exit mode {self.mode} is not one of the layer-wise modes {LAYERWISE_MODES}")
        if self.mode == MODE_STATIC and not 1 <= self.static_layer <= depth:
            raise ValueError(f"static layer {self.static_layer} is outside 1..{depth}")
        if self.mode == MODE_DYNAMIC and not self.entropy_threshold > 0:
            raise ValueError(f"entropy threshold {self.entropy_threshold} must be above 0")
        if self.mode == MODE_PATIENCE and not 1 <= self.patience <= depth:
            raise ValueError(f"patience {self.patience} is outside 1..{depth}")


class ExitRule:
    """Decides, layer by layer, which of a batch's still-running rows exit."""

    def __init__(self, policy: WirePolicy, depth: int, rows: int, exit_test: ExitTest = fast_cpu) -> None:
        policy.check(depth)
        self.policy = policy
        self.depth = depth
        self.exit_test = exit_test
        self._last_prediction = np.full(rows, -1, dtype=np.int64)
        self._unchanged = np.zeros(rows, dtype=np.int64)

    def exits(self, layer: int, rows: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Boolean mask over ``rows`` (the original row indices still running) at 1-based ``layer``."""
        policy = self.policy
        if layer >= self.depth:
            return np.ones(len(rows), dtype=bool)
        if policy.mode == MODE_STATIC:
            return np.full(len(rows), layer >= policy.static_layer, dtype=bool)
        previous, unchanged = self._last_prediction[rows], self._unchanged[rows]
        if policy.mode == MODE_DYNAMIC:
            return self.exit_test(logits, previous, unchanged, entropy_threshold=policy.entropy_threshold).exits
        decision = self.exit_test(logits, previous, unchanged, patience=policy.patience)
        self._unchanged[rows] = decision.unchanged
        self._last_prediction[rows] = decision.prediction
        return decision.exits


#: Runs segment ``index`` (0-based) on (token ids or hidden states, attention mask) → (hidden, logits).
SegmentRunner = Callable[[int, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class CascadeResult:
    logits: np.ndarray  # (rows, labels) at each row's exit
    exit_layers: np.ndarray  # (rows,) 1-based


def run_cascade(
    run_segment: SegmentRunner,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    policy: WirePolicy,
    depth: int,
    exit_test: ExitTest = fast_cpu,
) -> CascadeResult:
    """Run segment after segment; rows leave as soon as their exit fires, and the batch (and
    its padded width) shrinks with them, so later layers only pay for the rows still running."""
    rows = input_ids.shape[0]
    rule = ExitRule(policy, depth, rows, exit_test)
    running = np.arange(rows)
    inputs, mask = input_ids, attention_mask
    final_logits: np.ndarray | None = None
    exit_layers = np.zeros(rows, dtype=np.int64)
    for layer in range(1, depth + 1):
        hidden, logits = run_segment(layer - 1, inputs, mask)
        if final_logits is None:
            final_logits = np.zeros((rows, logits.shape[1]), dtype=logits.dtype)
        leaving = rule.exits(layer, running, logits)
        final_logits[running[leaving]] = logits[leaving]
        exit_layers[running[leaving]] = layer
        staying = ~leaving
        if not staying.any():
            break
        running, hidden, mask = running[staying], hidden[staying], mask[staying]
        width = int(mask.sum(axis=1).max())
        inputs, mask = np.ascontiguousarray(hidden[:, :width]), np.ascontiguousarray(mask[:, :width])
    assert final_logits is not None
    return CascadeResult(final_logits, exit_layers)
