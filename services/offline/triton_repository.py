"""The whole Triton model repository of a mesh, from its model cache: the embedding graph and
every early-exit model (their segments, the cascade and its module, HashEE graphs)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from services.adapters.tritonserver import TEMPLATES_DIR, Profile, render_model_repository
from services.earlyexit.backends.triton import render_repository as render_earlyexit
from services.earlyexit.core.bundle import list_models
from services.embedding.bundle import exported_model


def render_mesh_repository(
    models_dir: Path, repository: Path, profile: Profile, embedding_model: str = "embedding_minilm"
) -> list[str]:
    """Render what ``models_dir`` holds into ``repository``; the Triton model names written.
    Raises FileNotFoundError when the embedding export is not there."""
    exported = exported_model(models_dir)
    if not exported.fp32_path.exists():
        raise FileNotFoundError(f"no exported embedding model at {exported.fp32_path}")
    repository.mkdir(parents=True, exist_ok=True)
    render_model_repository(
        repository, TEMPLATES_DIR / "embedding", embedding_model, {"model.onnx": exported.fp32_path}, profile
    )
    render_earlyexit(repository, list_models(models_dir), profile)
    return sorted(p.name for p in repository.iterdir() if (p / "config.pbtxt").exists())


def wait_and_render(
    models_dir: Path,
    repository: Path,
    profile: Profile,
    wait_s: float,
    report: Callable[[str], None],
    embedding_model: str = "embedding_minilm",
) -> list[str]:
    """As ``render_mesh_repository``, waiting up to ``wait_s`` for the models to be made (a
    training Job may still be running when Triton's pod starts)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if list_models(models_dir):
                return render_mesh_repository(models_dir, repository, profile, embedding_model)
            reason = f"no early-exit model in {models_dir} yet"
        except FileNotFoundError as exc:
            reason = str(exc)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"gave up after {wait_s:.0f} s: {reason}")
        report(f"waiting: {reason}")
        time.sleep(5)
