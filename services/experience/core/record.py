"""RoSE's Record step: from m sampled reasoning paths to one experience's statistics."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class ReasoningPath:
    reasoning: str
    answer: str


@dataclass(frozen=True)
class PathSummary:
    reasoning: str  # the demonstration: the majority path with the most steps
    answer: str  # the majority answer, as that path wrote it
    uncertainty: float  # entropy in nats of the final-answer distribution
    complexity: float  # mean steps over the majority-answer paths
    path_count: int
    majority_count: int


def count_steps(reasoning: str) -> int:
    """One non-empty line is one reasoning step."""
    return sum(1 for line in reasoning.splitlines() if line.strip())


def answer_key(answer: str) -> str:
    """Answers vote together when they differ only in case and spacing."""
    return _WHITESPACE.sub(" ", answer.casefold()).strip()


def entropy(counts: list[int]) -> float:
    total = sum(counts)
    return -sum(c / total * math.log(c / total) for c in counts if c) + 0.0  # + 0.0: no -0.0


def summarise(paths: list[ReasoningPath]) -> PathSummary:
    """Vote on the answers, measure uncertainty and complexity, keep the longest majority path.

    Ties: the majority answer is the most frequent one that appears first among the paths; the
    demonstration is the majority path with the most steps, then the most characters, then the first.
    """
    if not paths:
        raise ValueError("at least one reasoning path is needed")
    votes = Counter(answer_key(p.answer) for p in paths)
    first_seen = {key: i for i, key in reversed(list(enumerate(answer_key(p.answer) for p in paths)))}
    majority = max(votes, key=lambda key: (votes[key], -first_seen[key]))
    majority_paths = [p for p in paths if answer_key(p.answer) == majority]
    steps = [count_steps(p.reasoning) for p in majority_paths]
    best = max(range(len(majority_paths)), key=lambda i: (steps[i], len(majority_paths[i].reasoning), -i))
    return PathSummary(
        reasoning=majority_paths[best].reasoning,
        answer=majority_paths[best].answer.strip(),
        uncertainty=entropy(list(votes.values())),
        complexity=sum(steps) / len(steps),
        path_count=len(paths),
        majority_count=len(majority_paths),
    )
