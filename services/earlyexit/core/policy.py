"""Exit policies and the batch-shrinking cascade that applies them, free of gRPC; the per-layer
exit test itself is a kernel (kernels/exit_rule.py).

The same cascade runs in process over ONNX Runtime segments and inside Triton's BLS
orchestrator, so both backends make identical decisions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np

from kernels import dispatch as kernels
from services.common.errors import Validator


class ExitMode(StrEnum):
    STATIC = "static"
    DYNAMIC = "dynamic"  # entropy threshold
    PATIENCE = "patience"
    HASHEE = "hashee"


class ModelKind(StrEnum):
    MULTI_EXIT = "multi_exit"
    HASHEE = "hashee"


MODES_BY_KIND: dict[ModelKind, tuple[ExitMode, ...]] = {
    ModelKind.MULTI_EXIT: (ExitMode.STATIC, ExitMode.DYNAMIC, ExitMode.PATIENCE),
    ModelKind.HASHEE: (ExitMode.HASHEE,),
}


@dataclass(frozen=True)
class ExitPolicy:
    mode: ExitMode
    static_layer: int | None = None
    entropy_threshold: float | None = None  # nats
    patience: int | None = None

    @property
    def label(self) -> str:
        """A short name for reports and plots, e.g. ``entropy<0.30``."""
        match self.mode:
            case ExitMode.STATIC:
                return f"static-{self.static_layer}"
            case ExitMode.DYNAMIC:
                return f"entropy<{self.entropy_threshold:.2f}"
            case ExitMode.PATIENCE:
                return f"patience-{self.patience}"
            case ExitMode.HASHEE:
                return "hashee"

    def as_dict(self) -> dict[str, object]:
        return {key: value for key, value in vars(self).items() if value is not None}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ExitPolicy:
        return cls(
            mode=ExitMode(data["mode"]),
            static_layer=data.get("static_layer"),  # type: ignore[arg-type]
            entropy_threshold=data.get("entropy_threshold"),  # type: ignore[arg-type]
            patience=data.get("patience"),  # type: ignore[arg-type]
        )


#: Mode numbers on the wire, as in the rosemesh.earlyexit.v1.ExitMode enum.
MODE_CODES: dict[ExitMode, int] = {
    ExitMode.STATIC: 1,
    ExitMode.DYNAMIC: 2,
    ExitMode.PATIENCE: 3,
    ExitMode.HASHEE: 4,
}


def policy_to_wire(policy: ExitPolicy) -> tuple[int, int, float, int]:
    """(mode, static_layer, entropy_threshold, patience), zeros for the unused fields."""
    return (
        MODE_CODES[policy.mode],
        policy.static_layer or 0,
        policy.entropy_threshold or 0.0,
        policy.patience or 0,
    )


def policy_from_wire(mode: int, static_layer: int, entropy_threshold: float, patience: int) -> ExitPolicy:
    by_code = {code: m for m, code in MODE_CODES.items()}
    if mode not in by_code:
        raise ValueError(f"unknown exit mode {mode}")
    exit_mode = by_code[mode]
    return ExitPolicy(
        exit_mode,
        static_layer=static_layer if exit_mode is ExitMode.STATIC else None,
        entropy_threshold=entropy_threshold if exit_mode is ExitMode.DYNAMIC else None,
        patience=patience if exit_mode is ExitMode.PATIENCE else None,
    )


def resolve_policy(
    requested: ExitPolicy | None, *, kind: ModelKind, depth: int, num_labels: int, default: ExitPolicy
) -> ExitPolicy:
    """The policy to run: the model's default for ``None``, defaults filled in, every bound checked."""
    if requested is None:
        return default
    check = Validator()
    check.check(
        requested.mode in MODES_BY_KIND[kind],
        "policy.mode",
        f"{kind.value} models support {', '.join(m.value for m in MODES_BY_KIND[kind])}, not {requested.mode.value}",
    )
    check.raise_if_any()
    policy = requested
    if policy.mode is ExitMode.STATIC:
        check.check(
            policy.static_layer is not None and 1 <= policy.static_layer <= depth,
            "policy.static_layer",
            f"must be between 1 and the model's depth {depth}, got {policy.static_layer}",
        )
    elif policy.mode is ExitMode.DYNAMIC:
        ceiling = math.log(num_labels)
        if policy.entropy_threshold is None:
            policy = replace(policy, entropy_threshold=default_entropy_threshold(default, num_labels))
        threshold = policy.entropy_threshold
        check.check(
            threshold is not None and math.isfinite(threshold) and 0.0 < threshold <= ceiling,
            "policy.entropy_threshold",
            f"must be above 0 and at most ln({num_labels}) = {ceiling:.4f} nats, got {threshold}",
        )
    elif policy.mode is ExitMode.PATIENCE:
        if policy.patience is None:
            policy = replace(policy, patience=2)
        check.check(
            1 <= policy.patience <= depth,  # type: ignore[operator]
            "policy.patience",
            f"must be between 1 and the model's depth {depth}, got {policy.patience}",
        )
    check.raise_if_any()
    return policy


def default_entropy_threshold(default: ExitPolicy, num_labels: int) -> float:
    if default.mode is ExitMode.DYNAMIC and default.entropy_threshold is not None:
        return default.entropy_threshold
    return 0.3 * math.log(num_labels)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats of each row."""
    return -(probabilities * np.log(np.clip(probabilities, 1e-12, None))).sum(axis=-1)


class ExitRule:
    """Decides, layer by layer, which of a batch's still-running rows exit."""

    def __init__(self, policy: ExitPolicy, depth: int, rows: int) -> None:
        self.policy = policy
        self.depth = depth
        self._last_prediction = np.full(rows, -1, dtype=np.int64)
        self._unchanged = np.zeros(rows, dtype=np.int64)

    def exits(self, layer: int, rows: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Boolean mask over ``rows`` (the original row indices still running) at 1-based ``layer``."""
        if layer >= self.depth:
            return np.ones(len(rows), dtype=bool)
        match self.policy.mode:
            case ExitMode.STATIC:
                return np.full(len(rows), layer >= self.policy.static_layer, dtype=bool)
            case ExitMode.DYNAMIC:
                return kernels.decide_exits(
                    logits, self._last_prediction[rows], self._unchanged[rows], entropy_threshold=self.policy.entropy_threshold
                ).exits
            case ExitMode.PATIENCE:
                decision = kernels.decide_exits(
                    logits, self._last_prediction[rows], self._unchanged[rows], patience=self.policy.patience
                )
                self._unchanged[rows] = decision.unchanged
                self._last_prediction[rows] = decision.prediction
                return decision.exits
        raise ValueError(f"{self.policy.mode} is not a layer-wise exit mode")


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
    policy: ExitPolicy,
    depth: int,
) -> CascadeResult:
    """Run segment after segment; rows leave as soon as their exit fires, and the batch (and
    its padded width) shrinks with them, so later layers only pay for the rows still running."""
    rows = input_ids.shape[0]
    rule = ExitRule(policy, depth, rows)
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
