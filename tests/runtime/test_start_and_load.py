"""The one life cycle: construction does no work, the port opens at once with NOT_SERVING and the
load's progress, and the service turns SERVING once the bundle it waits for is published."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rosemesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from rosemesh.multilabel.v1 import multilabel_pb2, multilabel_pb2_grpc

from services.common.bundles import PROGRESS_FILE_ENV, progress_file, read_progress, write_progress
from services.common.net import free_port
from services.common.progress import MirroredProgress
from services.embedding.bundle import exported_model
from services.multilabel.core.bundle import models_root
from services.runtime.server import LIVENESS_SERVICE, PROGRESS_METADATA
from services.supervisor import RunningService
from tests.conftest import MULTILABEL_MODEL

# Builds every service from settings whose paths do not exist, with an audit hook that records
# every file opened, directory listed, socket made and process started while constructing, and
# spies on the model loaders that read files from native code.
CONSTRUCT = r"""
import json, sys, tempfile
from pathlib import Path
from services.catalog import SERVICES, service_class
from services.runtime.config import load_settings

missing = Path(tempfile.gettempdir()) / "rosemesh-construction-does-no-work" / "absent"
classes = {name: service_class(name) for name in SERVICES}
settings = {}
for name, cls in classes.items():
    flags = ["--models-dir", str(missing / "models")]
    if "data_dir" in cls.settings_class.model_fields:
        flags += ["--data-dir", str(missing / "data")]
    settings[name] = load_settings(cls.settings_class, flags)

WATCHED = ("open", "os.listdir", "os.scandir", "os.mkdir", "socket.__new__", "socket.bind", "subprocess.Popen")
seen, recording = [], [False]

def hook(event, args):
    if recording[0] and event in WATCHED:
        seen.append([recording[0], event, repr(args)[:200]])

sys.addaudithook(hook)

# Model loaders that read files from C or C++, which the audit hook does not see.
import numpy, onnxruntime, tokenizers

def spy(owner, name, label):
    real = getattr(owner, name)
    def recorded(*args, **kwargs):
        if recording[0]:
            seen.append([recording[0], label, repr(args)[:200]])
        return real(*args, **kwargs)
    setattr(owner, name, recorded)

spy(onnxruntime, "InferenceSession", "onnxruntime.InferenceSession")
spy(tokenizers.Tokenizer, "from_file", "tokenizers.Tokenizer.from_file")
spy(numpy, "load", "numpy.load")

recording[0] = "control"
open(sys.executable, "rb").close()
for name, cls in classes.items():
    recording[0] = name
    cls(settings[name])
recording[0] = False
print(json.dumps(seen))
"""


def test_constructing_every_service_reads_no_file_loads_nothing_and_opens_no_port() -> None:
    done = subprocess.run([sys.executable, "-c", CONSTRUCT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    events = json.loads(done.stdout.strip().splitlines()[-1])
    control = [e for e in events if e[0] == "control"]
    assert [e[1] for e in control] == ["open"], "the audit hook must see the control's open()"
    work = [e for e in events if e[0] != "control"]
    assert work == [], f"construction did work: {work}"


def test_mirrored_progress_writes_what_a_waiting_service_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = progress_file(tmp_path / "bundle")
    monkeypatch.setenv(PROGRESS_FILE_ENV, str(target))
    with MirroredProgress(disable=True) as progress:
        task = progress.add_task("meta-learner", total=10)
        assert read_progress(target) == "meta-learner 0/10 (0%)"
        progress.update(task, completed=3, description="meta-learner reward 0.71")
        assert read_progress(target).startswith("meta-learner reward 0.71 3/10 (30%)")  # a new step: at once
        progress.advance(task)
        assert read_progress(target).startswith("meta-learner reward 0.71 3/10 (30%)")  # a count: not yet
        time.sleep(0.6)  # past the mirror's interval
        progress.advance(task)
    message = read_progress(target)
    assert message is not None and re.fullmatch(r"meta-learner reward 0\.71 5/10 \(50%\), about \d+ s left", message)


def health_with_progress(address: str, service: str = "") -> tuple[int, str | None]:
    with grpc.insecure_channel(address) as channel:
        response, call = health_pb2_grpc.HealthStub(channel).Check.with_call(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    progress = dict(call.trailing_metadata() or ()).get(PROGRESS_METADATA)
    return response.status, progress.decode() if progress is not None else None


def wait_for_health(address: str, process: subprocess.Popen[bytes], want: int, timeout_s: float) -> str | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the service exited with {process.returncode}"
        try:
            status, progress = health_with_progress(address)
            if status == want:
                return progress
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{address}: health never became {health_pb2.HealthCheckResponse.ServingStatus.Name(want)}")


def test_a_service_waits_for_its_bundle_not_serving_with_progress_then_serves(
    embedding_service: RunningService, multilabel_trained: tuple[Path, object], tmp_path: Path
) -> None:
    made_dir, _ = multilabel_trained
    models_dir = tmp_path / "models"
    bundle = models_root(models_dir) / MULTILABEL_MODEL
    write_progress(progress_file(bundle), "meta-learner (REINFORCE) 3/10 (30%)")  # a maker at work
    port = free_port()
    address = f"127.0.0.1:{port}"
    flags = ["--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(free_port())]
    flags += ["--models-dir", str(models_dir), "--no-train-default"]
    flags += ["--embedding-target", embedding_service.address]
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "multilabel", *flags])
    try:
        progress = wait_for_health(address, process, health_pb2.HealthCheckResponse.NOT_SERVING, 60)
        assert progress is not None and "meta-learner (REINFORCE) 3/10 (30%)" in progress
        assert f"the default multi-label model {MULTILABEL_MODEL!r}" in progress
        assert health_with_progress(address, LIVENESS_SERVICE)[0] == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(address) as channel:
            stub = multilabel_pb2_grpc.MultiLabelServiceStub(channel)
            with pytest.raises(grpc.RpcError) as early:
                stub.Predict(multilabel_pb2.PredictRequest(texts=["you idiot"]), timeout=5)
        assert early.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "multilabel is not serving yet" in early.value.details()

        # The maker publishes: the whole version folder appears in one rename.
        staging = tmp_path / "staging"
        shutil.copytree(models_root(made_dir) / MULTILABEL_MODEL, staging)
        bundle.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(bundle)
        progress_file(bundle).unlink()

        assert wait_for_health(address, process, health_pb2.HealthCheckResponse.SERVING, 60) is None
        with grpc.insecure_channel(address) as channel:
            stub = multilabel_pb2_grpc.MultiLabelServiceStub(channel)
            response = stub.Predict(multilabel_pb2.PredictRequest(texts=["you idiot"]), timeout=30)
        assert response.model == MULTILABEL_MODEL and len(response.predictions) == 1
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0


def test_serve_makes_a_missing_export_itself_and_serves_once_it_is_published(tmp_path: Path) -> None:
    """The real maker: `rosemesh serve embedding` on an empty models folder starts the export as a
    process of its own, shows its progress while NOT_SERVING, and serves the published export."""
    models_dir = tmp_path / "models"
    port = free_port()
    address = f"127.0.0.1:{port}"
    flags = ["--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(free_port())]
    flags += ["--models-dir", str(models_dir), "--no-fast", "--no-http"]
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "embedding", *flags])
    try:
        seen: set[str] = set()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert process.poll() is None, f"the service exited with {process.returncode}"
            try:
                status, progress = health_with_progress(address)
            except grpc.RpcError:
                time.sleep(0.2)
                continue
            if status == health_pb2.HealthCheckResponse.SERVING:
                break
            seen.add(progress or "")
            time.sleep(0.2)
        else:
            pytest.fail(f"not SERVING after the export; progress seen: {sorted(seen)}")
        assert any("waiting for the all-MiniLM-L6-v2 export: all-MiniLM-L6-v2: torch → ONNX" in p for p in seen), seen
        with grpc.insecure_channel(address) as channel:
            response = embedding_pb2_grpc.EmbeddingServiceStub(channel).Embed(
                embedding_pb2.EmbedRequest(texts=["made while we waited"]), timeout=30
            )
        assert response.dimension == 384 and len(response.embeddings) == 1
        bundle = exported_model(models_dir)
        assert bundle.missing(fast=False) == []
        gone = time.monotonic() + 60  # the maker clears its progress file as it exits
        while progress_file(bundle.directory).exists() and time.monotonic() < gone:
            time.sleep(0.2)
        assert not progress_file(bundle.directory).exists()
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0
