"""ERASER-style faithfulness of word attributions (DeYoung et al., 2020): remove the top words
(comprehensiveness: a faithful ranking's removal costs the prediction a lot) or keep only them
(sufficiency: a faithful ranking's words alone keep it, so the drop is small)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.common.explain import Words

TOP_FRACTION = 0.2


def top_words(scores: np.ndarray, fraction: float = TOP_FRACTION) -> set[int]:
    """The highest-scored ``fraction`` of the words (at least one); ties broken by position."""
    count = max(1, math.ceil(fraction * len(scores)))
    return {int(i) for i in np.argsort(-np.asarray(scores), kind="stable")[:count]}


@dataclass(frozen=True)
class Erased:
    """The texts to classify for one ranking: without its top words, and with them alone."""

    without_top: str
    only_top: str


def erase(words: Words, scores: np.ndarray, fraction: float = TOP_FRACTION) -> Erased:
    top = top_words(scores, fraction)
    return Erased(words.without(top), words.only(top))


def random_scores(words: Words, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(len(words)).astype(np.float64)


@dataclass(frozen=True)
class Faithfulness:
    comprehensiveness: float  # mean p(full) - p(without top): higher is more faithful
    sufficiency: float  # mean p(full) - p(top alone): lower is more faithful


def faithfulness(full: Sequence[float], without_top: Sequence[float], only_top: Sequence[float]) -> Faithfulness:
    """From the target's probability on each whole text, without its top words, and with them alone."""
    whole = np.asarray(full, dtype=np.float64)
    return Faithfulness(
        comprehensiveness=float(np.mean(whole - np.asarray(without_top))),
        sufficiency=float(np.mean(whole - np.asarray(only_top))),
    )
