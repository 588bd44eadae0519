"""Versioned, immutable model bundles: publishing by rename, the CURRENT pointer, a publisher
killed midway, and real services that switch versions on SIGHUP without a failed call."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from services.common.model_versions import Generation, ModelVersions, VersionExists
from services.earlyexit.client import EarlyExitClient
from services.earlyexit.core.bundle import MANIFEST, ModelManifest
from services.earlyexit.core.bundle import models_root as earlyexit_root
from services.multilabel.client import MultiLabelClient
from services.multilabel.core.bundle import StoredMultiLabelModel
from services.multilabel.core.bundle import models_root as multilabel_root
from services.multilabel.offline.train import ClassifierConfig, MetaConfig, train_multilabel
from services.supervisor import RunningService, service_process
from tests.conftest import EARLYEXIT_MODEL, MULTILABEL_MODEL
from tests.helpers import scrape

QUICK_TRAINING = {
    "classifier_config": ClassifierConfig(epochs=20),
    "meta_config": MetaConfig(updates=2, episodes_per_update=2),
}


def publish_files(versions: ModelVersions, version: str, files: dict[str, bytes]) -> None:
    with versions.publish("model", version) as staging:
        for name, data in files.items():
            (staging / name).write_bytes(data)


def test_a_version_appears_whole_and_current_only_once_published(tmp_path: Path) -> None:
    versions = ModelVersions(tmp_path)
    with versions.publish("model", "1") as staging:
        (staging / "weights.bin").write_bytes(b"w1")
        assert versions.versions("model") == [] and versions.current("model") is None
    assert versions.versions("model") == ["1"] and versions.current("model") == "1"
    assert versions.names() == ["model"]
    publish_files(versions, "2", {"weights.bin": b"w2"})
    assert versions.current("model") == "2" and versions.resolve("model", "1") == "1"
    assert (versions.path("model", "1") / "weights.bin").read_bytes() == b"w1"
    versions.point("model", "1")  # a rollback
    assert versions.current("model") == "1"
    assert versions.resolve("model", "3") is None


def test_a_published_version_is_never_changed(tmp_path: Path) -> None:
    versions = ModelVersions(tmp_path)
    publish_files(versions, "1", {"weights.bin": b"w1"})
    with pytest.raises(VersionExists, match="already has a published version '1'"):
        publish_files(versions, "1", {"weights.bin": b"other"})
    assert (versions.path("model", "1") / "weights.bin").read_bytes() == b"w1"
    with pytest.raises(FileNotFoundError, match="no published version '9'"):
        versions.point("model", "9")
    with pytest.raises(ValueError, match="must be 1-128 letters"):
        versions.path("model", "../escape")


def test_a_failed_publish_leaves_nothing_behind(tmp_path: Path) -> None:
    versions = ModelVersions(tmp_path)
    with pytest.raises(RuntimeError), versions.publish("model", "1") as staging:
        (staging / "weights.bin").write_bytes(b"half")
        raise RuntimeError("training diverged")
    assert versions.versions("model") == [] and list((tmp_path / "model").iterdir()) == []


PUBLISHER = """
import sys, time
from pathlib import Path
from services.common.model_versions import ModelVersions

with ModelVersions(Path(sys.argv[1])).publish("model", "2") as staging:
    (staging / "manifest.json").write_text('{"version": "2"}')
    print("half written", flush=True)
    time.sleep(60)
    (staging / "weights.bin").write_bytes(b"w2")
"""


def test_a_publisher_killed_midway_is_never_seen_by_a_reader(tmp_path: Path) -> None:
    versions = ModelVersions(tmp_path)
    publish_files(versions, "1", {"manifest.json": b'{"version": "1"}', "weights.bin": b"w1"})
    incomplete: list[str] = []
    reading = threading.Event()

    def reader() -> None:
        while not reading.is_set():
            for version in versions.versions("model"):
                if not (versions.path("model", version) / "weights.bin").is_file():
                    incomplete.append(version)
            current = versions.current("model")
            if current is None or not (versions.path("model", current) / "weights.bin").is_file():
                incomplete.append(f"current {current}")

    thread = threading.Thread(target=reader)
    thread.start()
    publisher = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert publisher.stdout is not None and publisher.stdout.readline().strip() == "half written"
        time.sleep(0.2)
        publisher.send_signal(signal.SIGKILL)
        publisher.wait(timeout=30)
        time.sleep(0.2)
    finally:
        reading.set()
        thread.join()
        publisher.kill()
    assert incomplete == []
    assert versions.versions("model") == ["1"] and versions.current("model") == "1"
    # The version the dead publisher meant to publish can still be published, whole.
    publish_files(versions, "2", {"manifest.json": b'{"version": "2"}', "weights.bin": b"w2"})
    assert versions.current("model") == "2"


async def test_calls_in_flight_finish_on_the_old_generation_which_closes_after_them() -> None:
    closed: list[str] = []

    async def close(value: str) -> None:
        closed.append(value)

    generation = Generation("v1", close)
    release = asyncio.Event()

    async def call() -> str:
        async with generation.use() as value:
            await release.wait()
            return value

    in_flight = asyncio.create_task(call())
    await asyncio.sleep(0)
    swapping = asyncio.create_task(generation.swap("v2"))
    await asyncio.sleep(0.05)
    assert generation.value == "v2" and closed == [] and not swapping.done()
    async with generation.use() as value:
        assert value == "v2"
    release.set()
    assert await in_flight == "v1"
    await swapping
    assert closed == ["v1"]


async def _hammer(call, stop: asyncio.Event) -> tuple[int, list[BaseException]]:  # noqa: ANN001
    answered, failures = 0, []
    while not stop.is_set():
        try:
            await call()
            answered += 1
        except Exception as exc:  # noqa: BLE001 - every failure is collected and asserted on
            failures.append(exc)
    return answered, failures


async def _default_multilabel_version(client: MultiLabelClient) -> str:
    return next(m.version for m in await client.list_models() if m.is_default)


async def _wait_for(condition, timeout_s: float = 60.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_replicas_following_the_pointer_switch_together_on_reload_with_no_failed_call(
    multilabel_trained: tuple[Path, StoredMultiLabelModel], embedding_service: RunningService, tmp_path: Path
) -> None:
    made_dir, first = multilabel_trained
    models_dir = tmp_path / "models"
    shutil.copytree(multilabel_root(made_dir), multilabel_root(models_dir))
    v1 = first.manifest.version
    flags = ["--models-dir", str(models_dir), "--embedding-target", embedding_service.address, "--no-train-default"]
    pinned = ["--model-versions", f'{{"{MULTILABEL_MODEL}": "{v1}"}}']
    with (
        service_process("multilabel", flags) as one,
        service_process("multilabel", flags) as two,
        service_process("multilabel", [*flags, *pinned]) as held,
    ):
        replicas = (one, two, held)
        clients = [MultiLabelClient(r.address, timeout_s=30) for r in replicas]
        try:
            assert [await _default_multilabel_version(c) for c in clients] == [v1, v1, v1]
            stop = asyncio.Event()
            hammers = [
                asyncio.create_task(_hammer(lambda c=c: c.predict(["you are an idiot"]), stop)) for c in clients
            ]
            # Training publishes version 2 while version 1 is served.
            second = await asyncio.to_thread(
                train_multilabel, MULTILABEL_MODEL, models_dir, embedding_service.address, **QUICK_TRAINING
            )
            v2 = second.manifest.version
            assert v2 != v1 and ModelVersions(multilabel_root(models_dir)).current(MULTILABEL_MODEL) == v2
            assert [await _default_multilabel_version(c) for c in clients] == [v1, v1, v1]  # until reload
            for replica in replicas:
                replica.process.send_signal(signal.SIGHUP)

            async def switched() -> bool:
                return [await _default_multilabel_version(c) for c in clients] == [v2, v2, v1]

            await _wait_for(switched)
            await asyncio.sleep(0.5)
            stop.set()
            results = await asyncio.gather(*hammers)
            assert all(answered > 0 for answered, _ in results)
            assert [failures for _, failures in results] == [[], [], []]
            assert (await clients[0].predict(["hello"])).version == v2
            assert (await clients[2].predict(["hello"])).version == v1
            assert (await clients[2].predict(["hello"], version=v2)).version == v2  # every version stays callable
            for replica, version in zip(replicas, (v2, v2, v1), strict=True):
                samples = scrape(replica)["rosemesh_served_model_info"]
                assert [(s.labels["model"], s.labels["version"]) for s in samples] == [(MULTILABEL_MODEL, version)]
        finally:
            for client in clients:
                await client.close()


async def test_earlyexit_swaps_its_onnx_sessions_on_reload_with_no_failed_call(
    earlyexit_models_dir: Path, tmp_path: Path
) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(earlyexit_root(earlyexit_models_dir), earlyexit_root(models_dir))
    versions = ModelVersions(earlyexit_root(models_dir))
    v1 = versions.current(EARLYEXIT_MODEL)
    assert v1 is not None
    with service_process("earlyexit", ["--models-dir", str(models_dir), "--no-train-default"]) as service:
        async with EarlyExitClient(service.address, timeout_s=30) as client:

            async def served_version() -> str:
                return next(m.version for m in await client.list_models() if m.name == EARLYEXIT_MODEL)

            assert await served_version() == v1
            stop = asyncio.Event()
            hammer = asyncio.create_task(_hammer(lambda: client.classify(["a gripping, tender film"]), stop))
            # A new version of the same graphs, published beside the first.
            manifest = ModelManifest.model_validate_json((versions.path(EARLYEXIT_MODEL, v1) / MANIFEST).read_text())
            manifest.version = f"{v1}-2"
            with versions.publish(EARLYEXIT_MODEL, manifest.version) as staging:
                shutil.copytree(versions.path(EARLYEXIT_MODEL, v1), staging, dirs_exist_ok=True)
                (staging / MANIFEST).write_text(manifest.model_dump_json())
            service.process.send_signal(signal.SIGHUP)

            async def switched() -> bool:
                return await served_version() == manifest.version

            await _wait_for(switched)
            response = await client.classify(["a gripping, tender film"])
            assert response.model_version == manifest.version
            stop.set()
            answered, failures = await hammer
            assert answered > 0 and failures == []
