"""Asking the judge, with bounded repair-and-retry, and counting what could not be read."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from prometheus_client import Counter

from services.critique.core.parsing import (
    ComparisonVerdict,
    Judgement,
    JudgeOutputError,
    parse_comparison,
    parse_judgement,
)
from services.critique.core.ports import Judge
from services.critique.core.prompts import (
    ChatMessage,
    choice_messages,
    compare_messages,
    repair_messages,
    score_messages,
    verdict_messages,
)
from services.critique.core.rubrics import COMPARE_SCHEMA, Rubric

PARSE_FAILURES = Counter(
    "rosemesh_critique_parse_failures",
    "Judge outputs that could not be parsed (every attempt, repaired or not), by rubric and task.",
    ["rubric", "task"],
)
JUDGEMENTS = Counter(
    "rosemesh_critique_judgements",
    "Judge calls completed, by rubric, task and final parse status (ok, repaired, failed).",
    ["rubric", "task", "parse_status"],
)

T = TypeVar("T")


class ParseStatus(StrEnum):
    OK = "ok"
    REPAIRED = "repaired"
    FAILED = "failed"


@dataclass(frozen=True)
class Attempted(Generic[T]):
    """The parsed answer (None when FAILED), the last raw output and how many calls it took."""

    value: T | None
    status: ParseStatus
    raw_output: str
    attempts: int
    error: str = ""


class Critic:
    """The judge's two questions (score one response, compare two) under a rubric."""

    def __init__(self, judge: Judge, *, max_repairs: int = 2, max_tokens: int = 256) -> None:
        self.judge = judge
        self.max_repairs = max_repairs
        self.max_tokens = max_tokens

    async def _ask(
        self,
        messages: list[ChatMessage],
        schema: dict[str, Any],
        parse: Callable[[str], T],
        rubric: str,
        task: str,
    ) -> Attempted[T]:
        conversation, raw, error = messages, "", ""
        for attempt in range(1, self.max_repairs + 2):
            raw = await self.judge.complete(conversation, schema, self.max_tokens)
            try:
                value = parse(raw)
            except JudgeOutputError as exc:
                error = str(exc)
                PARSE_FAILURES.labels(rubric, task).inc()
                conversation = repair_messages(messages, raw, error)
                continue
            status = ParseStatus.OK if attempt == 1 else ParseStatus.REPAIRED
            JUDGEMENTS.labels(rubric, task, status.value).inc()
            return Attempted(value, status, raw, attempt)
        JUDGEMENTS.labels(rubric, task, ParseStatus.FAILED.value).inc()
        return Attempted(None, ParseStatus.FAILED, raw, self.max_repairs + 1, error)

    async def score(
        self, rubric: Rubric, query: str, response: str, reference: str = ""
    ) -> Attempted[Judgement]:
        messages = score_messages(rubric, query, response, reference)
        return await self._ask(
            messages, rubric.score_schema, lambda raw: parse_judgement(raw, rubric), rubric.name, "score"
        )

    async def compare(
        self, rubric: Rubric, query: str, response_a: str, response_b: str, reference: str = ""
    ) -> Attempted[ComparisonVerdict]:
        messages = compare_messages(rubric, query, response_a, response_b, reference)
        return await self._ask(messages, COMPARE_SCHEMA, parse_comparison, rubric.name, "compare")

    async def _lean(
        self, messages: list[ChatMessage], favoured: tuple[str, ...], against: tuple[str, ...], rubric: str, task: str
    ) -> Attempted[float]:
        """How likely the judge's answer starts with one of ``favoured`` rather than ``against``, read
        from its token probabilities. No text is parsed, so nothing needs repairing."""
        probabilities = await self.judge.choose(messages, (*favoured, *against))
        raw = json.dumps(probabilities)
        lean = sum(probabilities[option] for option in favoured)
        mass = lean + sum(probabilities[option] for option in against)
        if mass <= 0:
            PARSE_FAILURES.labels(rubric, task).inc()
            JUDGEMENTS.labels(rubric, task, ParseStatus.FAILED.value).inc()
            options = ", ".join((*favoured, *against))
            return Attempted(None, ParseStatus.FAILED, raw, 1, f"none of {options} is among the judge's likely answers")
        JUDGEMENTS.labels(rubric, task, ParseStatus.OK.value).inc()
        return Attempted(lean / mass, ParseStatus.OK, raw, 1)

    async def prefer(
        self, rubric: Rubric, query: str, response_a: str, response_b: str, reference: str = ""
    ) -> Attempted[float]:
        """How likely the judge finds A, the response shown first, the better one: its probability
        of answering "A" against "B"."""
        messages = choice_messages(rubric, query, response_a, response_b, reference)
        return await self._lean(messages, ("A",), ("B",), rubric.name, "prefer")

    async def agree(
        self, rubric: Rubric, query: str, response: str, question: str, reference: str = ""
    ) -> Attempted[float]:
        """How likely the judge answers yes to a yes-or-no ``question`` about ``response``."""
        messages = verdict_messages(query, response, question, reference)
        return await self._lean(messages, ("yes", "Yes"), ("no", "No"), rubric.name, "agree")
