"""`pip install '.[embedding]'` in a fresh virtual environment: no torch, and it serves an
embedding bundle that the full install published, with the same vectors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services.common.net import free_port
from services.embedding.bundle import ExportedModel
from services.embedding.client import EmbeddingClient
from services.supervisor import MAKE_BUNDLES_ENV, wait_until_serving
from tests.deploy.tooling import ROOT


@pytest.fixture(scope="module")
def slim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("slim") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", f"{ROOT}[embedding]"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def test_the_embedding_extra_installs_no_torch(slim: Path) -> None:
    for absent in ("torch", "transformers", "numba", "qdrant_client"):
        done = subprocess.run([str(slim / "bin" / "python"), "-c", f"import {absent}"], capture_output=True, text=True)
        assert done.returncode != 0 and "No module named" in done.stderr, absent
    done = subprocess.run([str(slim / "bin" / "python"), "-c", "import onnxruntime, tokenizers, grpc"])
    assert done.returncode == 0


@pytest.fixture(scope="module")
def slim_service(slim: Path, embedding_model: ExportedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The slim install serving the bundle the full install exported (the session's)."""
    models_dir = embedding_model.directory.parents[1]
    port = free_port()
    command = [str(slim / "bin" / "rosemesh"), "serve", "embedding", "--host", "127.0.0.1", "--port", str(port),
               "--metrics-port", str(free_port()), "--models-dir", str(models_dir), "--no-int8"]  # fmt: skip
    log = (tmp_path_factory.mktemp("slim-log") / "serve.log").open("wb")
    process = subprocess.Popen(
        command, env={**os.environ, MAKE_BUNDLES_ENV: "0"}, cwd=tmp_path_factory.mktemp("cwd"), stdout=log, stderr=log
    )
    try:
        wait_until_serving(f"127.0.0.1:{port}", process, 120.0)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


async def test_the_slim_install_serves_the_full_installs_bundle(slim_service: str, embedding_client: EmbeddingClient) -> None:
    texts = ["a fine film", "the pool keeps answered questions", "héllo wörld"]
    async with EmbeddingClient(slim_service, timeout_s=30) as slim_client:
        served = await slim_client.embed(texts)
    expected = await embedding_client.embed(texts)
    assert served.vectors.shape == expected.vectors.shape == (3, 384)
    assert np.abs(served.vectors - expected.vectors).max() < 1e-5
