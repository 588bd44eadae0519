"""The RoSE loop end to end: a real small LLM (SmolLM2 on llama.cpp's OpenAI-compatible server),
the embedding service and the experience service, all on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from services.adapters.local_llm import MODEL_ALIAS, LocalLLMServer, local_llm_unavailable_reason
from services.experience.client import ExperienceClient
from services.experience.offline.loop import LoopConfig, RoseLoop
from services.offline.datasets import commonsense_qa
from services.supervisor import RunningService, service_process


@pytest.fixture(scope="module")
def local_llm() -> Iterator[LocalLLMServer]:
    if reason := local_llm_unavailable_reason():
        pytest.skip(reason)
    with LocalLLMServer() as server:
        yield server


async def test_loop_answers_records_and_reuses_experience(
    local_llm: LocalLLMServer, embedding_service: RunningService, tmp_path: Path
) -> None:
    flags = ["--embedding-target", embedding_service.address, "--data-dir", str(tmp_path)]
    with service_process("experience", flags) as experience:
        async with ExperienceClient(experience.address, "loop", timeout_s=300) as pool:
            llm = AsyncOpenAI(base_url=local_llm.base_url, api_key="none", timeout=300)
            loop = RoseLoop(llm, pool, LoopConfig(model=MODEL_ALIAS, k=2, paths=3, max_tokens=96))
            answers = [await loop.answer(q.prompt()) for q in commonsense_qa(3)]
            stats = await pool.stats()
    assert stats.experience_count == 3  # every answered question was recorded
    assert [a.demonstrations for a in answers] == [0, 1, 2]  # and orchestrated for the next
    for answered in answers:
        assert len(answered.paths) == 3 and all(p.reasoning for p in answered.paths)
        assert answered.answer in {"A", "B", "C", "D", "E", "?"}
        assert answered.uncertainty >= 0
