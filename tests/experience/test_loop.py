"""The RoSE loop's logic, with stand-ins for the LLM and the pool (the real ones are in
tests/experience/test_loop_llm.py)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
from rosemesh.experience.v1 import experience_pb2 as pb

from services.experience.offline.loop import LoopConfig, RoseLoop, build_prompt, letter_answer


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("Banks have revolving doors.\nThe answer is A.", "A"),
        ("So the answer is (c)", "C"),
        ("I think B, no wait, the answer is D. Final.", "D"),
        ("Probably E", "E"),
        ("no idea", ""),
    ],
)
def test_letter_answer(text: str, letter: str) -> None:
    assert letter_answer(text) == letter


def test_prompt_keeps_demonstration_order_and_ends_with_the_question() -> None:
    demos = [
        pb.Demonstration(experience=pb.Experience(question=f"Q{i}", reasoning=f"step {i}", answer="A"))
        for i in range(2)
    ]
    prompt = build_prompt("New?", demos)
    assert prompt.index("Q0") < prompt.index("Q1") < prompt.index("New?")
    assert prompt.endswith("Question: New?\nAnswer:\n") and "The answer is A." in prompt


class FakeLLM:
    def __init__(self, replies: list[str]) -> None:
        self.replies = itertools.cycle(replies)
        self.prompts: list[str] = []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    async def create(self, **request: object) -> SimpleNamespace:
        self.prompts.append(request["messages"][-1]["content"])  # type: ignore[index]
        message = SimpleNamespace(content=next(self.replies))
        return SimpleNamespace(choices=[SimpleNamespace(message=message)])


class FakePool:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, list[tuple[str, str]]]] = []

    async def orchestrate(self, question: str, k: int) -> pb.OrchestrateResponse:
        demo = pb.Demonstration(experience=pb.Experience(question="Old?", reasoning="think", answer="B"))
        return pb.OrchestrateResponse(demonstrations=[demo])

    async def record(self, question: str, paths: list[tuple[str, str]]) -> None:
        self.recorded.append((question, paths))


async def test_loop_votes_records_and_reports_uncertainty() -> None:
    llm, pool = FakeLLM(["x\nThe answer is A.", "y\nThe answer is A.", "z\nThe answer is C."]), FakePool()
    loop = RoseLoop(llm, pool, LoopConfig(model="m", paths=3))  # type: ignore[arg-type]
    answered = await loop.answer("New?")
    assert answered.answer == "A" and answered.demonstrations == 1
    assert answered.uncertainty == pytest.approx(0.6365, abs=1e-4)  # -(2/3 ln 2/3 + 1/3 ln 1/3)
    assert all("Question: Old?" in p for p in llm.prompts)
    assert pool.recorded[0][0] == "New?" and [a for _, a in pool.recorded[0][1]] == ["A", "A", "C"]


async def test_zero_shot_has_no_demonstrations_and_records_nothing() -> None:
    llm = FakeLLM(["The answer is B."])
    answered = await RoseLoop(llm, None, LoopConfig(model="m", paths=2)).answer("New?")  # type: ignore[arg-type]
    assert answered.answer == "B" and answered.demonstrations == 0
    assert llm.prompts == ["Question: New?\nAnswer:\n"] * 2
