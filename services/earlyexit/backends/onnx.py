"""ONNX Runtime in process: the embedded default backend, one session per exported graph."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import onnxruntime as ort

from services.common.errors import NotFound
from services.earlyexit.core.adapters import LORA_INPUTS, StoredBackbone
from services.earlyexit.core.bundle import StoredModel
from services.earlyexit.core.policy import CascadeResult, ExitPolicy, run_cascade
from services.earlyexit.core.ports import BackboneGraphs, EarlyExitBackend

T = TypeVar("T")


def _session(path: os.PathLike[str], threads: int, arena: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # A session's arena keeps its largest batch's activations; the backbone's many small graphs
    # would keep one each, and a tenant's memory is what the mesh promises to keep small.
    options.enable_cpu_mem_arena = arena
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    # Idle threads must sleep, not spin: the event loop and the gRPC threads share these cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel:
    """One model's graphs: a segment per layer (multi-exit), or one graph (HashEE, plain)."""

    def __init__(self, stored: StoredModel, threads: int = 0) -> None:
        self.manifest = stored.manifest
        threads = threads or (os.cpu_count() or 1)
        self.sessions = [_session(path, threads) for path in stored.graphs]

    def run_segment(
        self, index: int, inputs: np.ndarray, attention_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        first = "input_ids" if index == 0 else "hidden_in"
        hidden, logits = self.sessions[index].run(None, {first: inputs, "attention_mask": attention_mask})
        return hidden, logits

    def classify(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, policy: ExitPolicy
    ) -> CascadeResult:
        if self.manifest.kind.single_graph:
            (logits,) = self.sessions[0].run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
            return CascadeResult(logits, np.full(len(logits), self.manifest.num_layers, dtype=np.int64))
        return run_cascade(self.run_segment, input_ids, attention_mask, policy, self.manifest.num_layers)


class OnnxBackbone(BackboneGraphs):
    """The shared backbone's embeddings and layer graphs."""

    def __init__(self, stored: StoredBackbone, threads: int = 0) -> None:
        self.stored = stored
        self.threads = threads or (os.cpu_count() or 1)
        self.num_layers = stored.manifest.num_layers
        self._embeddings = _session(stored.embeddings_graph, self.threads, arena=False)
        self._layers = [
            _session(stored.layer_graph(i), self.threads, arena=False) for i in range(1, self.num_layers + 1)
        ]
        # Each LoRA graph holds its layer's weights again: loaded with the first LoRA batch.
        self._lora_layers: list[ort.InferenceSession] = []

    def embed(self, input_ids: np.ndarray) -> np.ndarray:
        (hidden,) = self._embeddings.run(None, {"input_ids": input_ids})
        return hidden

    def layer(
        self,
        layer: int,
        hidden: np.ndarray,
        attention_mask: np.ndarray,
        row_lora: tuple[np.ndarray, ...] | None = None,
    ) -> np.ndarray:
        feeds = {"hidden_in": hidden, "attention_mask": attention_mask}
        if row_lora is None:
            (out,) = self._layers[layer - 1].run(None, feeds)
            return out
        if not self._lora_layers:
            self._lora_layers = [
                _session(self.stored.lora_layer_graph(i), self.threads, arena=False)
                for i in range(1, self.num_layers + 1)
            ]
        feeds |= dict(zip(LORA_INPUTS, row_lora, strict=True))
        (out,) = self._lora_layers[layer - 1].run(None, feeds)
        return out


class OnnxRuntimeBackend(EarlyExitBackend):
    runtime = "onnxruntime"

    def __init__(self, models: list[StoredModel], threads: int = 0) -> None:
        self.models = {stored.name: OnnxModel(stored, threads) for stored in models}
        self.threads = threads
        self.backbone: OnnxBackbone | None = None
        # One batch at a time: a session already uses every core.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime")

    async def classify(
        self, model: str, input_ids: np.ndarray, attention_mask: np.ndarray, policy: ExitPolicy
    ) -> CascadeResult:
        if model not in self.models:
            raise NotFound(f"model {model!r} is not loaded")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self.models[model].classify, input_ids, attention_mask, policy
        )

    @property
    def has_backbone(self) -> bool:
        return self.backbone is not None

    def attach_backbone(self, stored: StoredBackbone) -> None:
        self.backbone = OnnxBackbone(stored, self.threads)

    async def run_backbone(self, work: Callable[[BackboneGraphs], T]) -> T:
        if self.backbone is None:
            raise NotFound("no adapter backbone is loaded; train an adapter first (Adapt)")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, work, self.backbone)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
