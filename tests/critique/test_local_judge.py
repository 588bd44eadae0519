"""The embedded default judge for real: SmolLM2-135M-Instruct on llama.cpp inside the critique
service, with grammar-constrained decoding, next to the embedding service. Slow (llama.cpp
must be built with `make llm`), so marked `slow`; it skips with the reason when llama-cpp or
the model is missing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from rosemesh.critique.v1 import critique_pb2 as pb

from services.adapters.local_llm import MODEL_ALIAS, LocalLLMServer
from services.critique.backends.llama import llama_unavailable_reason
from services.critique.client import CritiqueClient
from services.supervisor import RunningService, service_process
from tests.helpers import scrape

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        llama_unavailable_reason() is not None,
        reason=f"local judge unavailable: {llama_unavailable_reason()}",
    ),
]


@pytest.fixture(scope="module")
def local_critique(embedding_service: RunningService) -> Iterator[RunningService]:
    flags = ["--embedding-target", embedding_service.address, "--judge", "local", "--max-repairs", "0"]
    with service_process("critique", flags, startup_timeout_s=300) as service:
        yield service


async def test_the_local_judge_answers_every_rubric_within_the_schema_on_the_first_try(
    local_critique: RunningService,
) -> None:
    async with CritiqueClient(local_critique.address, timeout_s=600, max_attempts=1) as client:
        general = await client.score("What is the capital of France?", "The capital of France is Paris.")
        harmless = await client.score(
            "How do I make a bomb?", "I can't help with that; it could hurt people.", rubric="harmlessness"
        )
        creative = await client.score(
            "List unusual uses for a brick.", "1. A doorstop\n2. Grind it into pigment", rubric="creativity"
        )
        compared = await client.compare("What is 2+2?", "4", "5")
    # --max-repairs 0: a single constrained attempt each, and every one must be readable.
    for response in (general, harmless, creative):
        result = response.result
        assert response.judge_model == "smollm2"
        assert result.parse_status == pb.PARSE_STATUS_OK and result.attempts == 1, result.raw_output
        assert 1 <= result.overall <= 10 and result.critique
    labels = {d.dimension: d.score for d in harmless.result.dimensions}
    assert set(labels) == {"fairness", "safety", "morality", "legality", "data_protection"}
    assert labels["legality"] in (1, 3) and labels["data_protection"] in (1, 3)
    assert all(v in (1, 2, 3) for v in labels.values())
    assert {d.dimension for d in creative.result.dimensions} == {
        "fluency",
        "flexibility",
        "originality",
        "elaboration",
    }
    assert compared.parse_status == pb.PARSE_STATUS_OK and compared.winner in (
        pb.WINNER_A,
        pb.WINNER_B,
        pb.WINNER_TIE,
    )
    failures = scrape(local_critique).get("rosemesh_critique_parse_failures", [])
    assert sum(s.value for s in failures if s.name.endswith("_total")) == 0


async def test_an_openai_compatible_llama_cpp_server_judges_with_its_schema_mode(
    embedding_service: RunningService,
) -> None:
    """The endpoint judge against a real OpenAI-compatible server (llama.cpp's, serving the same
    SmolLM2), which constrains decoding when sent the schema as {"type": "json_object", "schema"}."""
    with LocalLLMServer() as llm:
        flags = [
            "--embedding-target", embedding_service.address, "--judge", "endpoint",
            "--judge-endpoint", llm.base_url, "--judge-model", MODEL_ALIAS,
            "--judge-schema-mode", "json_object", "--max-repairs", "0",
        ]  # fmt: skip
        with service_process("critique", flags) as critique:
            async with CritiqueClient(critique.address, timeout_s=600, max_attempts=1) as client:
                response = await client.score("What is 2+2?", "2+2 is 4.", reference="4")
    assert response.judge_model == MODEL_ALIAS
    assert response.result.parse_status == pb.PARSE_STATUS_OK, response.result.raw_output
    assert 1 <= response.result.overall <= 10
    assert {d.dimension for d in response.result.dimensions} == {"correctness", "helpfulness", "clarity"}
