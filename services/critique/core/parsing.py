"""Reading the judge's output. Anything that is not a complete, valid answer raises
JudgeOutputError with the reason; nothing here ever invents a score."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from services.critique.core.rubrics import OVERALL_RANGE, Rubric, Verdict


class JudgeOutputError(ValueError):
    """The judge's output cannot be read as the answer the schema asks for."""


@dataclass(frozen=True)
class Judgement:
    critique: str
    overall: float
    dimensions: dict[str, float]


@dataclass(frozen=True)
class ComparisonVerdict:
    critique: str
    score_a: int
    score_b: int

    @property
    def winner(self) -> Verdict:
        return "A" if self.score_a > self.score_b else "B" if self.score_b > self.score_a else "tie"


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_object(raw: str) -> dict[str, Any]:
    """The one JSON object in ``raw``: the whole text, a fenced block, or the first balanced
    ``{...}`` in surrounding prose (small models add a sentence before or after)."""
    text = raw.strip()
    if not text:
        raise JudgeOutputError("the judge returned no text")
    fenced = _FENCE.search(text)
    candidates = [fenced.group(1).strip()] if fenced else []
    candidates.append(text)
    start = text.find("{")
    if start >= 0:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
            if isinstance(value, dict):
                return value
        except json.JSONDecodeError:
            pass
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
        raise JudgeOutputError(f"expected a JSON object, got {type(value).__name__}")
    if start < 0:
        raise JudgeOutputError("no JSON object in the output")
    raise JudgeOutputError("the JSON object is incomplete or malformed (was the output cut off?)")


def _integer(value: Any, name: str) -> int:
    # bool is an int in Python; "7" and 7.0 are fine, 7.5 and "seven" are not.
    if isinstance(value, bool):
        raise JudgeOutputError(f"{name}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise JudgeOutputError(f"{name}: expected an integer, got {value!r}")


def _critique(data: dict[str, Any]) -> str:
    critique = data.get("critique")
    if not isinstance(critique, str) or not critique.strip():
        raise JudgeOutputError("critique: missing or empty")
    return critique.strip()


def parse_judgement(raw: str, rubric: Rubric) -> Judgement:
    """A Score answer under ``rubric``: critique, every judged dimension in range, overall 1-10."""
    data = extract_object(raw)
    critique = _critique(data)
    dimensions: dict[str, int] = {}
    for dimension in rubric.judged:
        if dimension.name not in data:
            raise JudgeOutputError(f"{dimension.name}: missing")
        value = _integer(data[dimension.name], dimension.name)
        allowed = dimension.score_schema()["enum"]
        if value not in allowed:
            raise JudgeOutputError(f"{dimension.name}: {value} is not one of {allowed}")
        dimensions[dimension.name] = value
    if "overall" not in data:
        raise JudgeOutputError("overall: missing")
    return Judgement(critique, _pair_score(data, "overall"), dimensions)


def _pair_score(data: dict[str, Any], name: str) -> int:
    if name not in data:
        raise JudgeOutputError(f"{name}: missing")
    value = _integer(data[name], name)
    low, high = OVERALL_RANGE
    if not low <= value <= high:
        raise JudgeOutputError(f"{name}: {value} is outside {low}-{high}")
    return value


def parse_comparison(raw: str) -> ComparisonVerdict:
    """A Compare answer: a critique and a score from 1 to 10 for each response."""
    data = extract_object(raw)
    return ComparisonVerdict(_critique(data), _pair_score(data, "score_a"), _pair_score(data, "score_b"))
