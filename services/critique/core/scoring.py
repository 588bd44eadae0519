"""Scoring under a rubric: the judge for judged dimensions and the overall score, embeddings
for TTCT's measured dimensions. Plain Python: no gRPC here."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from services.critique.core.creativity import CreativityConfig, CreativityMeasures, measure, split_ideas
from services.critique.core.judging import Attempted, Critic, ParseStatus
from services.critique.core.parsing import ComparisonVerdict
from services.critique.core.rubrics import Measure, Rubric, Source


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


@dataclass
class Scorer:
    critic: Critic
    embedder: Embedder | None = None
    creativity: CreativityConfig = field(default_factory=CreativityConfig)
    #: Items judged at once in a batch (a local judge serialises them anyway).
    concurrency: int = 4

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
        dimensions = []
        for dimension in rubric.dimensions:
            if dimension.source == Source.JUDGE:
                dimensions.append(
                    DimensionResult(
                        dimension.name, float(judged.value.dimensions[dimension.name]), Source.JUDGE
                    )
                )
            else:
                dimensions.append(by_name[dimension.name])
        return ScoreOutcome(
            judged.status,
            float(judged.value.overall),
            dimensions,
            judged.value.critique,
            judged.raw_output,
            judged.attempts,
        )

    async def score_many(self, rubric: Rubric, items: Sequence[ScoreItem]) -> list[ScoreOutcome]:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(item: ScoreItem) -> ScoreOutcome:
            async with gate:
                return await self.score(rubric, item)

        return list(await asyncio.gather(*(one(item) for item in items)))

    async def compare(
        self, rubric: Rubric, query: str, response_a: str, response_b: str, reference: str = ""
    ) -> Attempted[ComparisonVerdict]:
        return await self.critic.compare(rubric, query, response_a, response_b, reference)
