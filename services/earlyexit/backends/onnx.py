"""ONNX Runtime in process: the embedded default backend, one session per exported graph."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import onnx
import onnxruntime as ort

from services.common.errors import NotFound
from services.earlyexit.core.adapters import LORA_INPUTS, StoredBackbone, TenantAdapter
from services.earlyexit.core.bundle import StoredModel
from services.earlyexit.core.policy import CascadeResult, ExitPolicy, run_cascade
from services.earlyexit.core.ports import BackboneGraphs, EarlyExitBackend

T = TypeVar("T")


def _session(graph: os.PathLike[str] | bytes, threads: int, arena: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # A session's arena keeps its largest batch's activations; the backbone's many small graphs
    # would keep one each, and a tenant's memory is what the mesh promises to keep small.
    options.enable_cpu_mem_arena = arena
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    # Idle threads must sleep, not spin: the event loop and the gRPC threads share these cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = graph if isinstance(graph, bytes) else str(graph)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


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


def merged_lora_layers(stored: StoredBackbone, adapter: TenantAdapter) -> bytes:
    """Every layer of the backbone as one graph, each layer's query and value weights with the
    tenant's low-rank update added (``W + A @ B``), so no per-row LoRA input is left to feed."""
    model = onnx.load(str(stored.layer_graph(1)))
    graph = model.graph
    del graph.node[:], graph.initializer[:], graph.value_info[:]
    previous = "hidden_in"
    for layer in range(1, stored.manifest.num_layers + 1):
        part = onnx.load(str(stored.layer_graph(layer))).graph
        _merge_updates(part, dict(zip(LORA_INPUTS, adapter.lora(layer), strict=True)))
        renamed = functools.partial(_renamed, {"attention_mask": "attention_mask", "hidden_in": previous}, f"layer{layer}/")

        for weight in part.initializer:
            weight.name = renamed(weight.name)
        for node in part.node:
            node.name = renamed(node.name)
            node.input[:] = [renamed(name) for name in node.input]
            node.output[:] = [renamed(name) for name in node.output]
        graph.initializer.extend(part.initializer)
        graph.node.extend(part.node)
        previous = renamed(part.output[0].name)
    graph.output[0].name = previous
    return model.SerializeToString()


def _renamed(shared: dict[str, str], prefix: str, name: str) -> str:
    """A layer's own names prefixed (an empty name is an absent optional input); shared ones mapped."""
    return shared.get(name) or (prefix + name if name else name)


def _merge_updates(layer: onnx.GraphProto, updates: dict[str, np.ndarray]) -> None:
    """Add each ``{projection}_a @ {projection}_b`` to the weight of the MatMul feeding that
    projection's bias (the exported graph names biases, not the transposed weights)."""
    weights = {weight.name: weight for weight in layer.initializer}
    producer = {out: node for node in layer.node for out in node.output}
    for name in LORA_INPUTS:
        if not name.endswith("_a"):
            continue
        projection = name.removesuffix("_a")
        bias = f"layer.{projection}.bias"
        add = next(node for node in layer.node if node.op_type == "Add" and bias in node.input)
        (product,) = [name for name in add.input if name != bias]
        weight = weights[producer[product].input[1]]
        merged = onnx.numpy_helper.to_array(weight) + updates[name] @ updates[f"{projection}_b"]
        weight.CopyFrom(onnx.numpy_helper.from_array(merged.astype(np.float32), weight.name))


class MergedLoraLayers:
    """A hot LoRA tenant's fast path: its updates merged into one compiled graph of all layers."""

    def __init__(self, stored: StoredBackbone, adapter: TenantAdapter, threads: int) -> None:
        graph = merged_lora_layers(stored, adapter)
        self.nbytes = len(graph)
        self._session = _session(graph, threads, arena=False)

    def layers(self, hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (out,) = self._session.run(None, {"hidden_in": hidden, "attention_mask": attention_mask})
        return out


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

    def merge_lora(self, adapter: TenantAdapter) -> MergedLoraLayers:
        return MergedLoraLayers(self.stored, adapter, self.threads)


class OnnxRuntimeBackend(EarlyExitBackend):
    runtime = "onnxruntime"

    def __init__(self, models: list[StoredModel], threads: int = 0) -> None:
        self.models = {stored.name: OnnxModel(stored, threads) for stored in models}
        self.threads = threads
        self.backbone: OnnxBackbone | None = None
        # One batch at a time: a session already uses every core.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime")
        # Fast paths are prepared beside the serving worker, never in its way.
        self._preparing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime-prepare")

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

    async def run_backbone(self, work: Callable[[BackboneGraphs], T], prepare: bool = False) -> T:
        if self.backbone is None:
            raise NotFound("no adapter backbone is loaded; train an adapter first (Adapt)")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._preparing if prepare else self._executor, work, self.backbone)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._preparing.shutdown(wait=True)
