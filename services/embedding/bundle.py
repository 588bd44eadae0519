"""The exported embedding model as both sides see it: the export writes this layout, the
service loads it. Names, graph inputs and the recipe that makes an export current."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from services.common.base_model import BASE_MODEL_NAME

MODEL_NAME = BASE_MODEL_NAME
#: The fast tier's model name is the exact one's plus this.
FAST_SUFFIX = "-fast"
DIMENSION = 384
# sentence-transformers' max_seq_length for this model; the position table allows 512.
MAX_TOKENS = 256
ONNX_INPUTS = ("input_ids", "attention_mask")
ONNX_OUTPUT = "embeddings"
#: Recorded in the manifest; an export made with another graph recipe is redone.
GRAPH = "bert-fused+openvino+static-int8"


@dataclass(frozen=True)
class ExportedModel:
    name: str
    directory: Path
    dimension: int
    max_tokens: int

    @property
    def fp32_path(self) -> Path:
        return self.directory / "model.onnx"

    @property
    def int8_path(self) -> Path:
        return self.directory / "model.int8.xml"

    @property
    def openvino_path(self) -> Path:
        """The fp32 graph as OpenVINO IR (weights beside it in model.bin): the exact tier, and the
        fast tier as bf16 where the CPU computes it."""
        return self.directory / "model.xml"

    @property
    def parity_sentences_path(self) -> Path:
        """Dev sentences the server embeds at start to measure the fast tier against fp32."""
        return self.directory / "parity_sentences.json"

    @property
    def tokenizer_path(self) -> Path:
        return self.directory / "tokenizer.json"

    @property
    def manifest_path(self) -> Path:
        return self.directory / "manifest.json"

    def graph(self) -> str | None:
        """The graph recipe of the export in place, if any (the manifest is written last)."""
        graph = self.manifest().get("graph")
        return str(graph) if graph is not None else None

    def manifest(self) -> dict[str, object]:
        try:
            return dict(json.loads(self.manifest_path.read_text()))
        except (OSError, ValueError):
            return {}

    def missing(self, *, fast: bool) -> list[str]:
        """The export steps still to run ("fp32", "fast") for a current export."""
        steps = []
        fp32_files = (self.fp32_path, self.openvino_path, self.tokenizer_path)
        if not all(path.exists() for path in fp32_files) or self.graph() != GRAPH:
            steps.append("fp32")
        fast_files = (self.int8_path, self.parity_sentences_path)
        if fast and ("fp32" in steps or not all(path.exists() for path in fast_files)):
            steps.append("fast")
        return steps


def exported_model(models_dir: Path) -> ExportedModel:
    return ExportedModel(MODEL_NAME, models_dir / "embedding" / MODEL_NAME, DIMENSION, MAX_TOKENS)
