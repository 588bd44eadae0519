"""The serving extras in a fresh virtual environment (`pip install '.[embedding,multilabel,critique]'`):
no torch; it serves the embedding bundle and the multi-label model that the full install
published, with the same answers, and the critique service's code imports."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from services.common.net import free_port
from services.embedding.bundle import ExportedModel
from services.embedding.client import EmbeddingClient
from services.multilabel.client import MultiLabelClient
from services.multilabel.core.bundle import Policy, StoredMultiLabelModel
from services.supervisor import MAKE_BUNDLES_ENV, wait_until_serving
from tests.deploy.tooling import ROOT


@pytest.fixture(scope="module")
def slim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("slim") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", f"{ROOT}[embedding,multilabel,critique]"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def test_the_serving_extras_install_no_torch(slim: Path) -> None:
    for absent in ("torch", "transformers", "numba", "qdrant_client", "faiss"):
        done = subprocess.run([str(slim / "bin" / "python"), "-c", f"import {absent}"], capture_output=True, text=True)
        assert done.returncode != 0 and "No module named" in done.stderr, absent
    done = subprocess.run([str(slim / "bin" / "python"), "-c", "import onnxruntime, tokenizers, grpc"])
    assert done.returncode == 0


def test_the_critique_service_imports_with_its_extra(slim: Path) -> None:
    code = "import services.critique.server, services.critique.backends.endpoint"
    done = subprocess.run([str(slim / "bin" / "python"), "-c", code], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]


@contextmanager
def slim_serving(slim: Path, service: str, flags: list[str], work: Path) -> Iterator[str]:
    """``rosemesh serve SERVICE`` from the slim install on a free port; yields its address."""
    port = free_port()
    command = [str(slim / "bin" / "rosemesh"), "serve", service, "--host", "127.0.0.1", "--port", str(port),
               "--metrics-port", str(free_port()), *flags]  # fmt: skip
    with (work / f"{service}.log").open("wb") as log:
        process = subprocess.Popen(command, env={**os.environ, MAKE_BUNDLES_ENV: "0"}, cwd=work, stdout=log, stderr=log)
        try:
            wait_until_serving(f"127.0.0.1:{port}", process, 120.0)
            yield f"127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=60)


@pytest.fixture(scope="module")
def slim_service(slim: Path, embedding_model: ExportedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The slim install serving the bundle the full install exported (the session's)."""
    models_dir = embedding_model.directory.parents[1]
    flags = ["--models-dir", str(models_dir), "--no-fast", "--http-port", str(free_port())]
    with slim_serving(slim, "embedding", flags, tmp_path_factory.mktemp("slim-embedding")) as address:
        yield address


async def test_the_slim_install_serves_the_full_installs_bundle(slim_service: str, embedding_client: EmbeddingClient) -> None:
    texts = ["a fine film", "the pool keeps answered questions", "héllo wörld"]
    async with EmbeddingClient(slim_service, timeout_s=30) as slim_client:
        served = await slim_client.embed(texts)
    expected = await embedding_client.embed(texts)
    assert served.vectors.shape == expected.vectors.shape == (3, 384)
    assert np.abs(served.vectors - expected.vectors).max() < 1e-5


async def test_the_slim_install_serves_the_full_installs_multilabel_model(
    slim: Path,
    slim_service: str,
    multilabel_trained: tuple[Path, StoredMultiLabelModel],
    embedding_client: EmbeddingClient,
    tmp_path: Path,
) -> None:
    models_dir, model = multilabel_trained
    flags = ["--models-dir", str(models_dir), "--embedding-target", slim_service, "--no-train-default"]
    texts = ["you are a complete idiot", "thanks for the careful review"]
    with slim_serving(slim, "multilabel", flags, tmp_path) as address:
        async with MultiLabelClient(address, timeout_s=30) as client:
            response = await client.predict(texts, policy=Policy.META)
    assert response.version == model.manifest.version
    vectors = (await embedding_client.embed(texts)).vectors
    expected = model.classifier(Policy.META).probabilities(vectors)
    served = np.array([[score.probability for score in p.scores] for p in response.predictions])
    assert np.abs(served - expected).max() < 1e-4
