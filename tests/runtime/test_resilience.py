"""A dead backend answers UNAVAILABLE within the caller's deadline, and the service recovers by itself."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from services.common.breaker import CircuitBreaker
from services.common.net import free_port
from services.experience.client import ExperienceClient
from services.supervisor import service_process, spawn_service, stop_all
from tests.conftest import TEST_FLAGS


async def test_experience_answers_unavailable_fast_while_embedding_is_dead_then_recovers(
    embedding_model: object, tmp_path: Path
) -> None:
    port, metrics = free_port(), free_port()
    embedding_flags = [*TEST_FLAGS, "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics)]
    embedding = spawn_service("embedding", embedding_flags)
    try:
        flags = ["--embedding-target", f"127.0.0.1:{port}", "--data-dir", str(tmp_path)]
        with service_process("experience", flags) as experience:
            # The test's own client must not trip its breaker: the experience service's is under test.
            patient = CircuitBreaker("experience-under-test", failure_threshold=10**6)
            async with ExperienceClient(
                experience.address, "acme", timeout_s=5, max_attempts=1, breaker=patient
            ) as pool:
                await pool.record("What is 2 plus 3?", [("2 plus 3\nis 5", "5")])
                embedding.process.kill()
                embedding.process.wait()
                for _ in range(8):  # enough failures to open the circuit
                    started = time.monotonic()
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await pool.orchestrate("What is 3 plus 4?", k=1)
                    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                    assert time.monotonic() - started < 5.0
                assert "circuit open" in caught.value.details()
                embedding = spawn_service("embedding", embedding_flags)
                deadline = time.monotonic() + 60
                while True:
                    try:
                        shots = await pool.orchestrate("What is 3 plus 4?", k=1)
                        break
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.UNAVAILABLE
                        assert time.monotonic() < deadline, "experience did not recover"
                        await asyncio.sleep(0.5)
                assert shots.demonstrations[0].experience.answer == "5"
    finally:
        stop_all([embedding])
