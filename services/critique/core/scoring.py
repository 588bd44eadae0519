"""Scoring under a rubric: the judge for judged dimensions and the overall score, embeddings
for TTCT's measured dimensions. Plain Python: no gRPC here."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

import numpy as np

from services.critique.core.creativity import CreativityConfig, CreativityMeasures, measure, split_ideas
from services.critique.core.judging import Attempted, Critic, ParseStatus
from services.critique.core.parsing import ComparisonVerdict, Judgement
from services.critique.core.prompts import dimension_question, overall_question
from services.critique.core.rubrics import OVERALL_RANGE, Measure, Rubric, Source, Verdict


class Embedder(Protocol):
    async def __call__(self, texts: list[str]) -> np.ndarray:
        """Unit-normalised sentence vectors, one row per text."""
        ...


@dataclass(frozen=True)
class ScoreItem:
    query: str
    response: str
    reference: str = ""
    common_answers: tuple[str, ...] = ()


@dataclass(frozen=True)
class DimensionResult:
    name: str
    score: float
    source: Source
    explanation: str = ""


@dataclass(frozen=True)
class ScoreOutcome:
    status: ParseStatus
    overall: float | None
    dimensions: list[DimensionResult]
    critique: str
    raw_output: str
    attempts: int
    error: str = ""

    @property
    def dimension_scores(self) -> dict[str, float]:
        return {d.name: d.score for d in self.dimensions}


def _measured(rubric: Rubric, measures: CreativityMeasures, pool_size: int) -> list[DimensionResult]:
    n, kept = len(measures.ideas), measures.fluency
    explanations = {
        Measure.FLUENCY: (measures.fluency, f"{kept} distinct of {n} ideas"),
        Measure.FLEXIBILITY: (
            measures.flexibility,
            f"{measures.flexibility} clusters among {kept} distinct ideas",
        ),
        Measure.ORIGINALITY: (
            measures.originality,
            f"mean cosine distance of {kept} ideas from the nearest of {pool_size} common answers",
        ),
    }
    results = []
    for dimension in rubric.measured:
        assert dimension.measure is not None
        value, explanation = explanations[dimension.measure]
        results.append(DimensionResult(dimension.name, float(value), Source.EMBEDDING, explanation))
    return results


#: Where Score's and Compare's numbers come from: the judge's token probabilities of short answers
#: ("yes" or "no" to a question about a response, "A" or "B" for the better of two), or the scores it
#: writes in a JSON critique.
VerdictSource = Literal["probability", "generated"]


@dataclass
class Scorer:
    critic: Critic
    embedder: Embedder | None = None
    creativity: CreativityConfig = field(default_factory=CreativityConfig)
    #: Items judged at once in a batch (a local judge serialises them anyway).
    concurrency: int = 4
    verdicts_from: VerdictSource = "generated"

    async def _measure(self, rubric: Rubric, item: ScoreItem) -> list[DimensionResult]:
        if not rubric.measured:
            return []
        if self.embedder is None:
            raise RuntimeError(f"rubric {rubric.name!r} needs the embedding service")
        max_ideas = int(max(d.max_score for d in rubric.measured))
        ideas = split_ideas(item.response, max_ideas)
        common = list(item.common_answers or rubric.common_answers)
        vectors = await self.embedder([*ideas, *common]) if ideas or common else np.zeros((0, 0))
        measures = measure(ideas, vectors[: len(ideas)], vectors[len(ideas) :], self.creativity)
        return _measured(rubric, measures, len(common))

    async def score(self, rubric: Rubric, item: ScoreItem) -> ScoreOutcome:
        measured_task = asyncio.ensure_future(self._measure(rubric, item))
        try:
            if self.verdicts_from == "probability":
                judged = await self._judge_by_probability(rubric, item)
            else:
                judged = await self.critic.score(rubric, item.query, item.response, item.reference)
        except BaseException:
            measured_task.cancel()
            raise
        measured = await measured_task
        if judged.value is None:
            return ScoreOutcome(
                judged.status, None, measured, "", judged.raw_output, judged.attempts, judged.error
            )
        by_name = {d.name: d for d in measured}
        dimensions = [
            DimensionResult(d.name, float(judged.value.dimensions[d.name]), Source.JUDGE)
            if d.source == Source.JUDGE
            else by_name[d.name]
            for d in rubric.dimensions
        ]
        return ScoreOutcome(
            judged.status,
            float(judged.value.overall),
            dimensions,
            judged.value.critique,
            judged.raw_output,
            judged.attempts,
        )

    async def _judge_by_probability(self, rubric: Rubric, item: ScoreItem) -> Attempted[Judgement]:
        """One yes-or-no question for the overall score and one per judged dimension; each score is
        its probability of "yes" carried onto the scale (the nearest label for a labelled one)."""
        questions = [overall_question(rubric), *(dimension_question(d) for d in rubric.judged)]
        answers = await asyncio.gather(
            *(self.critic.agree(rubric, item.query, item.response, q, item.reference) for q in questions)
        )
        raw = "\n".join(answer.raw_output for answer in answers)
        if (failed := next((a for a in answers if a.value is None), None)) is not None:
            return Attempted(None, ParseStatus.FAILED, raw, len(answers), failed.error)
        overall, *per_dimension = [answer.value for answer in answers if answer.value is not None]
        dimension_yes = dict(zip((d.name for d in rubric.judged), per_dimension, strict=True))
        low, high = OVERALL_RANGE
        critique = f'The judge answers "{questions[0]}" yes with probability {overall:.2f}'
        if dimension_yes:
            critique += " (" + ", ".join(f"{name} {p:.2f}" for name, p in dimension_yes.items()) + ")"
        judgement = Judgement(
            critique + ".",
            low + (high - low) * overall,
            {d.name: d.from_probability(dimension_yes[d.name]) for d in rubric.judged},
        )
        return Attempted(judgement, ParseStatus.OK, raw, len(answers))

    async def score_many(self, rubric: Rubric, items: Sequence[ScoreItem]) -> list[ScoreOutcome]:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(item: ScoreItem) -> ScoreOutcome:
            async with gate:
                return await self.score(rubric, item)

        return list(await asyncio.gather(*(one(item) for item in items)))

    async def compare(
        self,
        rubric: Rubric,
        query: str,
        response_a: str,
        response_b: str,
        reference: str = "",
        *,
        both_orders: bool = True,
    ) -> Comparison:
        """The judge's verdict; with ``both_orders`` it also judges B before A. A generated verdict
        that changes with the order is a tie; probabilities are averaged over the two orders."""
        if self.verdicts_from == "probability":
            return await self._compare_by_probability(rubric, query, response_a, response_b, reference, both_orders)
        if not both_orders:
            given = await self.critic.compare(rubric, query, response_a, response_b, reference)
            return _single(given)
        given, swapped = await asyncio.gather(
            self.critic.compare(rubric, query, response_a, response_b, reference),
            self.critic.compare(rubric, query, response_b, response_a, reference),
        )
        return combine_orders(given, swapped)

    async def _compare_by_probability(
        self, rubric: Rubric, query: str, response_a: str, response_b: str, reference: str, both_orders: bool
    ) -> Comparison:
        if not both_orders:
            given = await self.critic.prefer(rubric, query, response_a, response_b, reference)
            verdict = _verdict(given.value) if given.value is not None else None
            return Comparison(
                verdict, _said(given.value) if given.value is not None else "", given.status,
                Position.NOT_SWAPPED, verdict, None, given.raw_output, given.attempts, given.value,
            )  # fmt: skip
        given, swapped = await asyncio.gather(
            self.critic.prefer(rubric, query, response_a, response_b, reference),
            self.critic.prefer(rubric, query, response_b, response_a, reference),
        )
        return combine_preferences(given, swapped)


class Position(StrEnum):
    CONSISTENT = "consistent"
    INCONSISTENT = "inconsistent"
    NOT_SWAPPED = "not_swapped"
    #: An order's answer could not be read.
    UNKNOWN = "unknown"


_SWAP: dict[Verdict, Verdict] = {"A": "B", "B": "A", "tie": "tie"}


@dataclass(frozen=True)
class Comparison:
    """A verdict in the request's terms (A is the first response as given). ``winner`` is None
    when an order's answer could not be read: no verdict is made up."""

    winner: Verdict | None
    critique: str
    status: ParseStatus
    position: Position
    winner_as_given: Verdict | None
    winner_swapped: Verdict | None
    raw_output: str
    attempts: int
    #: With probability verdicts: how likely A is the better response.
    preference_a: float | None = None


def _verdict(preference_a: float) -> Verdict:
    return "A" if preference_a > 0.5 else "B" if preference_a < 0.5 else "tie"


def _said(preference_a: float, as_given: float | None = None, as_swapped: float | None = None) -> str:
    said = f"The judge finds A the better response with probability {preference_a:.2f}"
    if as_given is not None and as_swapped is not None:
        said += f", both orders averaged ({as_given:.2f} with A shown first, {as_swapped:.2f} with B shown first)"
    return said + "."


def combine_preferences(given: Attempted[float], swapped: Attempted[float]) -> Comparison:
    """Balanced position calibration (Wang et al. 2023): P(A better) is the mean of the two orders'
    probabilities, so a judge that favours a position cancels out; the position is inconsistent
    when the two orders alone would pick different responses."""
    attempts = given.attempts + swapped.attempts
    raw = f"{given.raw_output}\n{swapped.raw_output}"
    as_given = _verdict(given.value) if given.value is not None else None
    # The swapped run saw B first: its probability of "A" is the request's B.
    as_swapped = _verdict(1.0 - swapped.value) if swapped.value is not None else None
    if given.value is None or swapped.value is None:
        return Comparison(None, "", ParseStatus.FAILED, Position.UNKNOWN, as_given, as_swapped, raw, attempts)
    first, second = given.value, 1.0 - swapped.value
    preference_a = (first + second) / 2
    position = Position.CONSISTENT if as_given == as_swapped else Position.INCONSISTENT
    return Comparison(
        _verdict(preference_a), _said(preference_a, first, second), ParseStatus.OK, position,
        as_given, as_swapped, raw, attempts, preference_a,
    )  # fmt: skip


def _single(given: Attempted[ComparisonVerdict]) -> Comparison:
    verdict = given.value.winner if given.value else None
    critique = given.value.critique if given.value else ""
    return Comparison(
        verdict, critique, given.status, Position.NOT_SWAPPED, verdict, None, given.raw_output, given.attempts
    )


def combine_orders(given: Attempted[ComparisonVerdict], swapped: Attempted[ComparisonVerdict]) -> Comparison:
    as_given = given.value.winner if given.value else None
    # The swapped run saw B first: its "A" is the request's B.
    as_swapped = _SWAP[swapped.value.winner] if swapped.value else None
    attempts = given.attempts + swapped.attempts
    failed = next((run for run in (given, swapped) if run.value is None), None)
    if failed is not None:
        return Comparison(
            None, "", ParseStatus.FAILED, Position.UNKNOWN, as_given, as_swapped, failed.raw_output, attempts
        )
    assert given.value is not None and swapped.value is not None
    status = ParseStatus.OK if given.status == swapped.status == ParseStatus.OK else ParseStatus.REPAIRED
    raw = f"{given.raw_output}\n{swapped.raw_output}"
    if as_given == as_swapped:
        return Comparison(
            as_given, given.value.critique, status, Position.CONSISTENT, as_given, as_swapped, raw, attempts
        )
    critique = f"The verdict changed with the order: {as_given} as given, {as_swapped} swapped. {given.value.critique}"
    return Comparison("tie", critique, status, Position.INCONSISTENT, as_given, as_swapped, raw, attempts)
