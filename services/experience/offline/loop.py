"""The full RoSE loop against any OpenAI-compatible chat endpoint, for users who want the method
end to end: orchestrate, prompt, sample m paths, vote, record, answer with its uncertainty."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from openai import AsyncOpenAI
from rosemesh.experience.v1 import experience_pb2 as pb

from services.experience.client import ExperienceClient
from services.experience.core.record import ReasoningPath, summarise

SYSTEM_PROMPT = (
    "You answer multiple-choice and arithmetic questions. Think step by step, one step per line, "
    "then finish with a line of the form 'The answer is X.'"
)

_ANSWER = re.compile(r"answer is\s*\(?([^\s.()]+)", re.IGNORECASE)


def letter_answer(text: str, letters: str = "ABCDE") -> str:
    """The option letter a completion settled on: 'The answer is X', else its last lone letter."""
    found = _ANSWER.findall(text)
    if found and found[-1].upper()[:1] in letters:
        return found[-1].upper()[:1]
    lone = re.findall(rf"\b([{letters}])\b", text)
    return lone[-1] if lone else ""


def build_prompt(question: str, demonstrations: Sequence[pb.Demonstration]) -> str:
    """Few-shot chain of thought: demonstrations in the order given (most similar last)."""
    shots = [
        f"Question: {d.experience.question}\nAnswer:\n{d.experience.reasoning.strip()}\nThe answer is {d.experience.answer}."
        for d in demonstrations
    ]
    return "\n\n".join([*shots, f"Question: {question}\nAnswer:\n"])


@dataclass(frozen=True)
class LoopAnswer:
    answer: str
    uncertainty: float
    paths: list[ReasoningPath]
    demonstrations: int


@dataclass(frozen=True)
class LoopConfig:
    model: str
    k: int = 7
    paths: int = 5
    temperature: float = 1.0
    max_tokens: int = 160
    record: bool = True


class RoseLoop:
    def __init__(
        self,
        llm: AsyncOpenAI,
        experience: ExperienceClient | None,
        config: LoopConfig,
        extract: Callable[[str], str] = letter_answer,
    ) -> None:
        self.llm = llm
        self.experience = experience
        self.config = config
        self.extract = extract

    async def _sample(self, prompt: str) -> list[ReasoningPath]:
        async def one() -> ReasoningPath:
            completion = await self.llm.chat.completions.create(
                model=self.config.model,
                messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}],
                temperature=self.config.temperature,
                max_tokens=self.config.max_tokens,
            )
            text = completion.choices[0].message.content or ""
            return ReasoningPath(text.strip() or "(no reasoning)", self.extract(text) or "?")

        return list(await asyncio.gather(*(one() for _ in range(self.config.paths))))

    async def answer(self, question: str) -> LoopAnswer:
        """Orchestrate (when a pool is given), sample, vote, and record the answered question."""
        demonstrations: Sequence[pb.Demonstration] = []
        if self.experience is not None:
            demonstrations = (await self.experience.orchestrate(question, k=self.config.k)).demonstrations
        paths = await self._sample(build_prompt(question, demonstrations))
        summary = summarise(paths)
        if self.experience is not None and self.config.record:
            await self.experience.record(question, [(p.reasoning, p.answer) for p in paths])
        return LoopAnswer(summary.answer, summary.uncertainty, paths, len(demonstrations))
