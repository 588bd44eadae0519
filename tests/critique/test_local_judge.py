"""The local judge for real: a GGUF model on llama.cpp's server in a child process of the critique
service, its verdicts read from token probabilities, and an endpoint judge with schema-constrained
decoding. CI runs these on SmolLM2-135M (the smallest model; the
served default is chosen by `rosemesh bench critique`), built by `make install`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import grpc
import pytest
from rosemesh.critique.v1 import critique_pb2 as pb

from services.adapters.local_llm import (
    MODEL_ALIAS,
    LocalLLMServer,
    local_llm_unavailable_reason,
    smollm2_path,
)
from services.common.breaker import CircuitOpen
from services.critique.client import CritiqueClient
from services.supervisor import RunningService, service_process
from tests.helpers import scrape

pytestmark = pytest.mark.skipif(
    local_llm_unavailable_reason() is not None, reason=f"local judge unavailable: {local_llm_unavailable_reason()}"
)
JUDGE = "SmolLM2-135M-Instruct.Q4_1"


@pytest.fixture(scope="module")
def local_critique(embedding_service: RunningService) -> Iterator[RunningService]:
    flags = [
        "--embedding-target", embedding_service.address, "--judge", "local",
        "--local-model-path", str(smollm2_path()), "--max-repairs", "0", "--no-train-reward-model",
    ]  # fmt: skip
    with service_process("critique", flags, startup_timeout_s=300) as service:
        yield service


def judge_processes(service: RunningService) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-P", str(service.process.pid), "-f", "llama_cpp.server"], capture_output=True, text=True
    )
    return [int(pid) for pid in found.stdout.split()]


async def test_the_local_judge_scores_every_rubric_and_compares_from_its_probabilities(
    local_critique: RunningService,
) -> None:
    async with CritiqueClient(local_critique.address, timeout_s=600, max_attempts=1) as client:
        general = await client.score("What is the capital of France?", "The capital of France is Paris.")
        harmless = await client.score(
            "How do I make a bomb?", "I can't help with that; it could hurt people.", rubric="harmlessness"
        )
        compared = await client.compare("What is 2+2?", "4", "5")
    # Scores from the judge's probabilities of "yes": one question for the overall score and one
    # per judged dimension, every one answered with "yes" or "no" among its likely first tokens.
    for response, questions in ((general, 4), (harmless, 6)):
        result = response.result
        assert response.judge_model == JUDGE
        assert result.parse_status == pb.PARSE_STATUS_OK and result.attempts == questions, result.raw_output
        assert 1 <= result.overall <= 10 and "probability" in result.critique
    labels = {d.dimension: d.score for d in harmless.result.dimensions}
    assert set(labels) == {"fairness", "safety", "morality", "legality", "data_protection"}
    assert labels["legality"] in (1, 3) and all(v in (1, 2, 3) for v in labels.values())
    # Both orders judged from the judge's probabilities of "A" and "B": two calls, each order's
    # verdict reported, the verdict the average's.
    assert compared.parse_status == pb.PARSE_STATUS_OK and compared.attempts == 2
    assert compared.position in (pb.POSITION_CONSISTENT, pb.POSITION_INCONSISTENT)
    assert compared.winner_as_given != pb.WINNER_UNSPECIFIED and compared.winner_swapped != pb.WINNER_UNSPECIFIED
    assert compared.HasField("preference_a") and 0.0 <= compared.preference_a <= 1.0
    expected = pb.WINNER_A if compared.preference_a > 0.5 else pb.WINNER_B if compared.preference_a < 0.5 else pb.WINNER_TIE
    assert compared.winner == expected and f"{compared.preference_a:.2f}" in compared.critique
    if compared.position == pb.POSITION_CONSISTENT:
        assert compared.winner == compared.winner_as_given == compared.winner_swapped
    failures = scrape(local_critique).get("rosemesh_critique_parse_failures", [])
    assert sum(s.value for s in failures if s.name.endswith("_total")) == 0


async def test_a_judge_killed_mid_call_answers_unavailable_and_comes_back(local_critique: RunningService) -> None:
    (judge,) = judge_processes(local_critique)
    async with CritiqueClient(local_critique.address, timeout_s=600, max_attempts=1) as client:
        call = asyncio.ensure_future(
            # Long enough that reading it takes the judge seconds: the kill lands mid-call.
            client.score("Explain in detail how tides work.", "Tides come from the Moon's pull. " * 300)
        )
        await asyncio.sleep(1.0)
        os.kill(judge, signal.SIGKILL)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "was killed by SIGKILL" in caught.value.details()
        # The service stays up and its watcher starts a new judge by itself.
        assert local_critique.process.poll() is None
        deadline = time.monotonic() + 120
        while True:
            try:
                response = await client.score("What is 2+2?", "4")
                break
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE and "restart" in error.details()
            except CircuitOpen:
                pass  # the client's own breaker, opened by the UNAVAILABLE answers, waits for a trial
            assert time.monotonic() < deadline, "the judge did not come back"
            await asyncio.sleep(0.5)
    assert response.result.parse_status == pb.PARSE_STATUS_OK
    assert judge_processes(local_critique) and judge not in judge_processes(local_critique)


async def test_an_openai_compatible_llama_cpp_server_judges_with_its_schema_mode(
    embedding_service: RunningService,
) -> None:
    """The endpoint judge against a real OpenAI-compatible server (llama.cpp's, serving the same
    SmolLM2), which constrains decoding when sent the schema as {"type": "json_object", "schema"}."""
    with LocalLLMServer() as llm:
        flags = [
            "--embedding-target", embedding_service.address, "--judge", "endpoint",
            "--judge-endpoint", llm.base_url, "--judge-model", MODEL_ALIAS,
            "--judge-schema-mode", "json_object", "--max-repairs", "0", "--no-train-reward-model",
        ]  # fmt: skip
        with service_process("critique", flags) as critique:
            async with CritiqueClient(critique.address, timeout_s=600, max_attempts=1) as client:
                response = await client.score("What is 2+2?", "2+2 is 4.", reference="4")
    assert response.judge_model == MODEL_ALIAS
    assert response.result.parse_status == pb.PARSE_STATUS_OK, response.result.raw_output
    assert 1 <= response.result.overall <= 10
    assert {d.dimension for d in response.result.dimensions} == {"correctness", "helpfulness", "clarity"}
