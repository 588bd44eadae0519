"""West-of-N: the best and the worst of N scored candidates make a preference pair, kept when
the gap between their scores is confident (at least ``min_margin``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class PairOutcome(StrEnum):
    CONFIDENT = "confident"
    MARGIN_TOO_SMALL = "margin_too_small"
    TOO_FEW_SCORED = "too_few_scored"


@dataclass(frozen=True)
class PreferencePair:
    chosen: int
    rejected: int
    margin: float


@dataclass(frozen=True)
class Selection:
    outcome: PairOutcome
    pair: PreferencePair | None


def select_pair(scores: Sequence[float | None], min_margin: float) -> Selection:
    """Best = highest score, worst = lowest score among the others; ties go to the lower index.
    Candidates without a score (judge output unreadable) take no part."""
    scored = [(i, s) for i, s in enumerate(scores) if s is not None]
    if len(scored) < 2:
        return Selection(PairOutcome.TOO_FEW_SCORED, None)
    best, best_score = max(scored, key=lambda item: (item[1], -item[0]))
    worst, worst_score = min(((i, s) for i, s in scored if i != best), key=lambda item: (item[1], item[0]))
    pair = PreferencePair(best, worst, best_score - worst_score)
    outcome = PairOutcome.CONFIDENT if pair.margin >= min_margin else PairOutcome.MARGIN_TOO_SMALL
    return Selection(outcome, pair)


def jsonl_line(prompt: str, chosen: str, rejected: str) -> str:
    """One training example in the prompt/chosen/rejected form TRL's reward trainer reads."""
    return json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}, ensure_ascii=False) + "\n"
