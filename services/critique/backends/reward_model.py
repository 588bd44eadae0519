"""The trained reward model in process: a MiniLM cross-encoder exported to ONNX, scoring
(query, response) pairs with ONNX Runtime. numpy, onnxruntime and tokenizers only: no torch.

Bundle layout, published by `rosemesh train reward-model` under ``<models_dir>/critique``::

    reward-model/<version>/model.onnx       input_ids, attention_mask, token_type_ids -> reward [batch]
    reward-model/<version>/tokenizer.json   the WordPiece tokenizer, pairs encoded as [CLS] q [SEP] r [SEP]
    reward-model/<version>/meta.json        max_tokens, training figures
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, RuntimeException

from services.common.errors import BackendUnavailable
from services.common.model_versions import ModelVersions
from services.common.tokens import EncodedText, TextEncoder, pad_batch

FAMILY = "critique"
REWARD_MODEL_NAME = "reward-model"
ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "meta.json"
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
ONNX_OUTPUT = "reward"


def reward_model_versions(models_dir: Path) -> ModelVersions:
    return ModelVersions(models_dir / FAMILY)


def encode_pairs(encoder: TextEncoder, pairs: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """The graph's inputs for (query, response) pairs, right-padded; truncation trims the longer
    side first, so a long question cannot push the response out."""
    encodings = encoder.tokenizer.encode_batch(pairs)
    ids, mask = pad_batch([EncodedText(np.asarray(e.ids, dtype=np.int64), bool(e.overflowing)) for e in encodings])
    segments = np.zeros_like(ids)
    for row, e in enumerate(encodings):
        segments[row, : len(e.type_ids)] = e.type_ids
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": segments}


def session_options(intra_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    # Idle threads must sleep, not spin: the event loop and the gRPC threads share these cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxRewardModel:
    """One published version; ``rewards`` runs in a worker thread, off the event loop."""

    def __init__(self, directory: Path, *, intra_op_threads: int = 1) -> None:
        self.directory = directory
        self.meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        self.model = f"{REWARD_MODEL_NAME}@{directory.name}"
        self.encoder = TextEncoder(directory / TOKENIZER_FILE, int(self.meta["max_tokens"]))
        self.session = ort.InferenceSession(
            str(directory / ONNX_FILE), session_options(intra_op_threads), providers=["CPUExecutionProvider"]
        )

    def score(self, query: str, responses: list[str]) -> np.ndarray:
        """float32 [len(responses)] rewards, in this thread."""
        if not responses:
            return np.zeros(0, dtype=np.float32)
        (rewards,) = self.session.run([ONNX_OUTPUT], encode_pairs(self.encoder, [(query, r) for r in responses]))
        return rewards

    async def rewards(self, query: str, responses: list[str]) -> list[float]:
        try:
            rewards = await asyncio.to_thread(self.score, query, responses)
        except (Fail, RuntimeException, MemoryError) as exc:
            raise BackendUnavailable(f"{self.model} could not score: {exc}") from exc
        values = [float(r) for r in rewards]
        if not all(math.isfinite(v) for v in values):
            raise BackendUnavailable(f"{self.model} gave a non-finite reward")
        return values


def load_reward_model(
    models_dir: Path, pinned_version: str | None = None, intra_op_threads: int = 1
) -> OnnxRewardModel | None:
    """The pinned version, else the current one; None while neither is published."""
    versions = reward_model_versions(models_dir)
    version = versions.resolve(REWARD_MODEL_NAME, pinned_version)
    if version is None:
        return None
    return OnnxRewardModel(versions.path(REWARD_MODEL_NAME, version), intra_op_threads=intra_op_threads)
