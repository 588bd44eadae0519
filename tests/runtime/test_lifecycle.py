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
from rosemesh.earlyexit.v1 import earlyexit_pb2, earlyexit_pb2_grpc

from services.catalog import SERVICES, service_class
from services.common.net import free_port
from services.embedding.client import EmbeddingClient
from services.supervisor import service_process, wait_until_serving

ROSEMESH = [sys.executable, "-m", "services.cli"]


def start_mesh(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """`rosemesh ARGS` in a process group of its own, so that a failed test leaves no service behind."""
    return subprocess.Popen(
        [*ROSEMESH, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def stop_mesh(mesh: subprocess.Popen[str], timeout_s: float) -> tuple[str, str]:
    """SIGTERM, and the output; past the timeout the whole group is killed and the test fails."""
    mesh.send_signal(signal.SIGTERM)
    try:
        return mesh.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(mesh.pid, signal.SIGKILL)
        mesh.communicate()
        pytest.fail(f"rosemesh did not stop within {timeout_s:.0f} s of SIGTERM")


async def test_sigterm_under_load_drains_in_flight_calls_and_exits_0(embedding_model: object) -> None:
    grace_s = 20.0
    with service_process("embedding", ["--grace-period-s", str(grace_s), "--no-fast"]) as service:
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


def test_up_starts_the_whole_mesh_prints_addresses_and_stops_cleanly(
    embedding_model: object,
    earlyexit_models_dir: Path,
    multilabel_trained: tuple[Path, object],
    tmp_path: Path,
) -> None:
    ports = {name: free_port() for name in SERVICES}
    env = {**os.environ}
    for name in SERVICES:
        prefix = f"ROSEMESH_{name.upper()}_"
        env[prefix + "PORT"] = str(ports[name])
        env[prefix + "METRICS_PORT"] = str(free_port())
        if "http_port" in service_class(name).settings_class.model_fields:
            env[prefix + "HTTP_PORT"] = str(free_port())
        if "embedding_target" in service_class(name).settings_class.model_fields:
            env[prefix + "EMBEDDING_TARGET"] = f"127.0.0.1:{ports['embedding']}"
    env["ROSEMESH_EXPERIENCE_DATA_DIR"] = str(tmp_path)
    # No judge download and no reward model: this test is about the life cycle, not the judge.
    env["ROSEMESH_CRITIQUE_FETCH_LOCAL_MODEL"] = "false"
    env["ROSEMESH_CRITIQUE_TRAIN_REWARD_MODEL"] = "false"
    env["ROSEMESH_EARLYEXIT_MODELS_DIR"] = str(earlyexit_models_dir)
    env["ROSEMESH_MULTILABEL_MODELS_DIR"] = str(multilabel_trained[0])
    mesh = start_mesh(["up"], env)
    try:
        for name in SERVICES:
            try:
                wait_until_serving(f"127.0.0.1:{ports[name]}", mesh, timeout_s=180)
            except (RuntimeError, TimeoutError) as exc:
                _, stderr = stop_mesh(mesh, timeout_s=60)
                pytest.fail(f"{exc}; rosemesh up said:\n{stderr[-3000:]}")
        embed = subprocess.run(
            [*ROSEMESH, "embed", "hello", "--target", f"127.0.0.1:{ports['embedding']}"],
            capture_output=True, text=True, timeout=60,
        )
        assert embed.returncode == 0, embed.stderr
        assert '"dimension": 384' in embed.stdout and '"norm": 1.0' in embed.stdout
        classify = subprocess.run(
            [*ROSEMESH, "classify", "what a wonderful film", "--target", f"127.0.0.1:{ports['earlyexit']}"],
            capture_output=True, text=True, timeout=60,
        )
        assert classify.returncode == 0, classify.stderr
        assert '"exit_layer"' in classify.stdout and '"label"' in classify.stdout
    finally:
        stdout, stderr = stop_mesh(mesh, timeout_s=60)
    assert mesh.returncode == 0, stderr
    for name in SERVICES:
        assert f"127.0.0.1:{ports[name]}" in stdout
        assert f"stopped {name} (exit 0)" in stderr


def test_up_while_a_model_trains_then_sigterm_stops_it_promptly(tmp_path: Path) -> None:
    """The mesh is up while a default model trains (its service answers UNAVAILABLE, saying why),
    and a stop asked for meanwhile is obeyed."""
    env = {
        **os.environ,
        "ROSEMESH_EARLYEXIT_MODELS_DIR": str(tmp_path),
        "ROSEMESH_EARLYEXIT_PORT": str(free_port()),
        "ROSEMESH_EARLYEXIT_METRICS_PORT": str(free_port()),
    }
    mesh = start_mesh(["up", "earlyexit"], env)
    address = f"127.0.0.1:{env['ROSEMESH_EARLYEXIT_PORT']}"
    try:
        # Up at once: the service answers while its model trains, saying so.
        deadline = time.monotonic() + 60
        while True:
            assert mesh.poll() is None and time.monotonic() < deadline, "the service never answered"
            try:
                with grpc.insecure_channel(address) as channel:
                    earlyexit_pb2_grpc.EarlyExitServiceStub(channel).ListModels(
                        earlyexit_pb2.ListModelsRequest(), timeout=5
                    )
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE and "waiting for the default early-exit model" in (
                    exc.details() or ""
                ):
                    break
            time.sleep(0.5)
        time.sleep(3)  # the supervisor's next look at the mesh
    finally:
        _, stderr = stop_mesh(mesh, timeout_s=30)
    assert mesh.returncode == 1, stderr
    assert "rosemesh is up" in stderr and "earlyexit answer UNAVAILABLE until their models are made" in stderr
    assert "stop requested while starting" in stderr
