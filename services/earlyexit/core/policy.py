"""Exit policies, and the batch-shrinking cascade that applies them, free of gRPC.

The cascade itself is ``kernels/exit_cascade.py`` (numpy only): it runs in process over ONNX
Runtime segments with ``kernels.dispatch``'s exit test, and inside Triton's BLS orchestrator,
where the rendered repository carries a copy of it, so both backends decide identically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np

from kernels import dispatch as kernels
from kernels import exit_cascade
from kernels.exit_cascade import CascadeResult, SegmentRunner
from services.common.errors import Validator

__all__ = ["CascadeResult", "SegmentRunner"]


class ExitMode(StrEnum):
    STATIC = "static"
    DYNAMIC = "dynamic"  # entropy threshold
    PATIENCE = "patience"
    HASHEE = "hashee"


class ModelKind(StrEnum):
    MULTI_EXIT = "multi_exit"
    HASHEE = "hashee"
    PLAIN = "plain"  # the fine-tuned classifier with no early exits: the baseline users would run

    @property
    def single_graph(self) -> bool:
        """Served as one graph from token ids to logits, rather than a cascade of segments."""
        return self is not ModelKind.MULTI_EXIT


MODES_BY_KIND: dict[ModelKind, tuple[ExitMode, ...]] = {
    ModelKind.MULTI_EXIT: (ExitMode.STATIC, ExitMode.DYNAMIC, ExitMode.PATIENCE),
    ModelKind.HASHEE: (ExitMode.HASHEE,),
    ModelKind.PLAIN: (ExitMode.STATIC,),
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
    ExitMode.STATIC: exit_cascade.MODE_STATIC,
    ExitMode.DYNAMIC: exit_cascade.MODE_DYNAMIC,
    ExitMode.PATIENCE: exit_cascade.MODE_PATIENCE,
    ExitMode.HASHEE: exit_cascade.MODE_HASHEE,
}


def policy_to_wire(policy: ExitPolicy) -> tuple[int, int, float, int]:
    """(mode, static_layer, entropy_threshold, patience), zeros for the unused fields."""
    return (
        MODE_CODES[policy.mode],
        policy.static_layer or 0,
        policy.entropy_threshold or 0.0,
        policy.patience or 0,
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
    if policy.mode is ExitMode.STATIC and kind is ModelKind.PLAIN:
        check.check(
            policy.static_layer == depth,
            "policy.static_layer",
            f"a plain model exits only after its last layer, {depth}; got {policy.static_layer}",
        )
    elif policy.mode is ExitMode.STATIC:
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


def run_cascade(
    run_segment: SegmentRunner,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    policy: ExitPolicy,
    depth: int,
) -> CascadeResult:
    """The cascade under ``policy``, with the exit test on the fastest path here (kernels.dispatch)."""
    wire = exit_cascade.WirePolicy(*policy_to_wire(policy))
    return exit_cascade.run_cascade(run_segment, input_ids, attention_mask, wire, depth, kernels.decide_exits)
