"""Start-up, graceful SIGTERM drain under load, bad configuration, and `rosemesh up`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from services.embedding.client import EmbeddingClient
from services.runtime.net import free_port
from services.supervisor import service_process, wait_until_serving

ROSEMESH = [sys.executable, "-m", "services.cli"]


async def test_sigterm_under_load_drains_in_flight_calls_and_exits_0(embedding_model: object) -> None:
    grace_s = 20.0
    with service_process("embedding", ["--grace-period-s", str(grace_s), "--no-int8"]) as service:
        async with EmbeddingClient(service.address, timeout_s=60, max_attempts=1) as client:
            texts = [f"sentence number {i} about a film that runs long" for i in range(32)]
            calls = [asyncio.create_task(client.embed(texts)) for _ in range(24)]
            await asyncio.sleep(0.3)  # the calls are in flight
            signalled = time.monotonic()
            service.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            service.process.send_signal(signal.SIGTERM)  # a repeat (supervisor and group) changes nothing
            results = await asyncio.gather(*calls, return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            assert not failures, f"in-flight calls failed during the drain: {failures[:3]}"
            assert all(r.vectors.shape == (32, 384) for r in results)  # type: ignore[union-attr]

            with pytest.raises(grpc.aio.AioRpcError) as after:
                await client.embed(["too late"], timeout_s=5)
            assert after.value.code() == grpc.StatusCode.UNAVAILABLE

        code = await asyncio.to_thread(service.process.wait, grace_s + 5)
        assert code == 0
        assert time.monotonic() - signalled < grace_s


def test_invalid_configuration_fails_at_start_naming_the_setting() -> None:
    done = subprocess.run(
        [*ROSEMESH, "serve", "embedding", "--max-batch-size", "-3"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "--max-batch-size / ROSEMESH_EMBEDDING_MAX_BATCH_SIZE" in done.stderr
    assert "greater than or equal to 1" in done.stderr


def test_unknown_service_is_refused() -> None:
    done = subprocess.run([*ROSEMESH, "serve", "nonsense"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown service 'nonsense'" in done.stderr


def test_up_starts_the_mesh_prints_addresses_and_stops_cleanly(embedding_model: object, tmp_path: Path) -> None:
    port, experience_port = free_port(), free_port()
    env = {
        **os.environ,
        "ROSEMESH_EMBEDDING_PORT": str(port),
        "ROSEMESH_EMBEDDING_METRICS_PORT": str(free_port()),
        "ROSEMESH_EXPERIENCE_PORT": str(experience_port),
        "ROSEMESH_EXPERIENCE_METRICS_PORT": str(free_port()),
        "ROSEMESH_EXPERIENCE_EMBEDDING_TARGET": f"127.0.0.1:{port}",
        "ROSEMESH_EXPERIENCE_DATA_DIR": str(tmp_path),
    }
    mesh = subprocess.Popen([*ROSEMESH, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_serving(f"127.0.0.1:{experience_port}", mesh, timeout_s=180)
        embed = subprocess.run(
            [*ROSEMESH, "embed", "hello", "--target", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60
        )
        assert embed.returncode == 0, embed.stderr
        assert '"dimension": 384' in embed.stdout and '"norm": 1.0' in embed.stdout
    finally:
        mesh.send_signal(signal.SIGTERM)
        stdout, stderr = mesh.communicate(timeout=60)
    assert mesh.returncode == 0, stderr
    assert f"127.0.0.1:{port}" in stdout and f"127.0.0.1:{experience_port}" in stdout
    assert "stopped embedding (exit 0)" in stderr and "stopped experience (exit 0)" in stderr
