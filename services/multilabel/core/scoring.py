"""Per-label thresholds, F1 and the linear multi-label classifier, in NumPy: the serving core."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Candidate thresholds for per-label tuning and for the meta-learner's prediction policy.
THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)


@dataclass(frozen=True)
class F1Scores:
    micro_f1: float
    macro_f1: float
    micro_precision: float
    micro_recall: float
    per_label_f1: np.ndarray


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """F1 = 2TP / (2TP + FP + FN), defined as 1 when a label is neither predicted nor present."""
    denominator = 2 * tp + fp + fn
    return np.where(denominator == 0, 1.0, 2 * tp / np.maximum(denominator, 1))


def f1_scores(truth: np.ndarray, predicted: np.ndarray) -> F1Scores:
    """Micro and macro F1 over (examples, labels) 0/1 matrices."""
    truth, predicted = truth.astype(bool), predicted.astype(bool)
    tp = (truth & predicted).sum(axis=0)
    fp = (~truth & predicted).sum(axis=0)
    fn = (truth & ~predicted).sum(axis=0)
    total_tp, total_fp, total_fn = tp.sum(), fp.sum(), fn.sum()
    per_label = _f1(tp, fp, fn)
    return F1Scores(
        micro_f1=float(_f1(total_tp, total_fp, total_fn)),
        macro_f1=float(per_label.mean()),
        micro_precision=float(total_tp / max(total_tp + total_fp, 1)),
        micro_recall=float(total_tp / max(total_tp + total_fn, 1)),
        per_label_f1=per_label,
    )


def apply_thresholds(probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Label ``j`` is predicted when its probability is at least ``thresholds[j]``."""
    return probabilities >= thresholds[None, :]


def tune_thresholds(
    probabilities: np.ndarray, truth: np.ndarray, grid: np.ndarray = THRESHOLD_GRID
) -> np.ndarray:
    """Per label, the grid threshold with the best F1 on (dev) data; ties go to the one nearest 0.5."""
    truth = truth.astype(bool)
    best = np.full(truth.shape[1], 0.5)
    for label in range(truth.shape[1]):
        scores = [
            (f1_scores(truth[:, [label]], probabilities[:, [label]] >= t).micro_f1, -abs(t - 0.5), t)
            for t in grid
        ]
        best[label] = max(scores)[2]
    return best


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass(frozen=True)
class MlpClassifier:
    """A shared hidden layer over sentence embeddings, then one logistic output per label. The
    shared layer is what per-label loss weights compete for."""

    hidden_weight: np.ndarray  # (dimension, hidden)
    hidden_bias: np.ndarray  # (hidden,)
    output_weight: np.ndarray  # (hidden, labels)
    output_bias: np.ndarray  # (labels,)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        hidden = np.maximum(features.astype(np.float64) @ self.hidden_weight + self.hidden_bias, 0.0)
        return sigmoid(hidden @ self.output_weight + self.output_bias)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}
