"""Rubrics are data: YAML files in services/critique/rubrics/, read into typed models.

A rubric names its dimensions, where each one's score comes from (the judge or embeddings),
its range, and for label schemes (Flames) the allowed labels. From a rubric come the JSON
schema the judge must fill in and the validator that reads the judge's answer.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

RUBRICS_DIR = Path(__file__).resolve().parent.parent / "rubrics"
DEFAULT_RUBRIC = "general"
#: The judge's overall score is always on this scale.
OVERALL_RANGE = (1, 10)
#: Longest critique the judge may write, in characters: with a character at most a token, the
#: constrained answer (critique, keys, scores) always fits the default --judge-max-tokens.
CRITIQUE_MAX_CHARS = 240


class Source(StrEnum):
    JUDGE = "judge"
    EMBEDDING = "embedding"


class Measure(StrEnum):
    FLUENCY = "fluency"
    FLEXIBILITY = "flexibility"
    ORIGINALITY = "originality"


class Dimension(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    source: Source
    min_score: float
    max_score: float
    labels: tuple[int, ...] = ()
    measure: Measure | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Dimension:
        if self.min_score >= self.max_score:
            raise ValueError(f"{self.name}: min_score must be below max_score")
        if self.labels and (
            list(self.labels) != sorted(self.labels, reverse=True)
            or not all(self.min_score <= label <= self.max_score for label in self.labels)
        ):
            raise ValueError(f"{self.name}: labels must be within the range, best first")
        if (self.source == Source.EMBEDDING) != (self.measure is not None):
            raise ValueError(f"{self.name}: an embedding dimension needs a measure, a judged one none")
        return self

    @property
    def is_label_scheme(self) -> bool:
        return bool(self.labels)

    def from_probability(self, yes: float) -> float:
        """The score a probability of "yes, this holds" carries: the same share of the scale, or
        for a labelled dimension the nearest label (the lower one on a tie: the cautious reading)."""
        score = self.min_score + (self.max_score - self.min_score) * yes
        if not self.labels:
            return score
        return float(min(sorted(self.labels), key=lambda label: abs(label - score)))

    def score_schema(self) -> dict[str, Any]:
        """JSON schema of the judge's score: an enum, which grammar-constrained decoders handle well."""
        values = (
            list(self.labels) if self.labels else list(range(int(self.min_score), int(self.max_score) + 1))
        )
        return {"type": "integer", "enum": values}


class Rubric(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str
    guidance: str
    dimensions: tuple[Dimension, ...]
    common_answers: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> Rubric:
        names = [d.name for d in self.dimensions]
        if len(set(names)) != len(names) or {"overall", "critique"} & set(names):
            raise ValueError(f"{self.name}: dimension names must be unique and not overall/critique")
        return self

    @property
    def judged(self) -> tuple[Dimension, ...]:
        return tuple(d for d in self.dimensions if d.source == Source.JUDGE)

    @property
    def measured(self) -> tuple[Dimension, ...]:
        return tuple(d for d in self.dimensions if d.source == Source.EMBEDDING)

    @cached_property
    def score_schema(self) -> dict[str, Any]:
        """What the judge answers for Score: a critique first (reasoning before verdict, as
        CritiqueLLM does), then every judged dimension, then the overall score."""
        low, high = OVERALL_RANGE
        properties: dict[str, Any] = {"critique": {"type": "string", "maxLength": CRITIQUE_MAX_CHARS}}
        for dimension in self.judged:
            properties[dimension.name] = dimension.score_schema()
        properties["overall"] = {"type": "integer", "enum": list(range(low, high + 1))}
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }


#: What the judge answers for Compare: a critique of both, then a score for each. Small judges
#: name the wrong letter after a right critique ("B is wrong ... winner: B"); a score per
#: response they get right, and the verdict follows from the two scores.
_PAIR_SCORE = {"type": "integer", "enum": list(range(OVERALL_RANGE[0], OVERALL_RANGE[1] + 1))}
COMPARE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "critique": {"type": "string", "maxLength": CRITIQUE_MAX_CHARS},
        "score_a": _PAIR_SCORE,
        "score_b": _PAIR_SCORE,
    },
    "required": ["critique", "score_a", "score_b"],
    "additionalProperties": False,
}
Verdict = Literal["A", "B", "tie"]


def load_rubric(path: Path) -> Rubric:
    with path.open(encoding="utf-8") as handle:
        return Rubric.model_validate(yaml.safe_load(handle))


def load_rubrics(directory: Path = RUBRICS_DIR) -> dict[str, Rubric]:
    """Every ``*.yaml`` rubric in ``directory``, by name; the file name must match the name."""
    rubrics: dict[str, Rubric] = {}
    for path in sorted(directory.glob("*.yaml")):
        rubric = load_rubric(path)
        if rubric.name != path.stem:
            raise ValueError(f"{path}: rubric name {rubric.name!r} does not match the file name")
        rubrics[rubric.name] = rubric
    if DEFAULT_RUBRIC not in rubrics:
        raise ValueError(f"{directory}: the default rubric {DEFAULT_RUBRIC!r} is missing")
    return rubrics
