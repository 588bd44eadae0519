"""ONNX Runtime in process: the embedded default backend."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from services.embedding.core.ports import EmbeddingBackend


def available_providers() -> list[str]:
    """CUDA first when this onnxruntime build and machine offer it, CPU always."""
    offered = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in offered]


class OnnxRuntimeBackend(EmbeddingBackend):
    runtime = "onnxruntime"

    def __init__(self, model_path: Path, *, intra_op_threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads or (os.cpu_count() or 1)
        # Idle threads must sleep, not spin: the event loop and the gRPC threads share these cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(model_path), options, providers=available_providers())
        # One inference at a time: the session already uses every core for a batch.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime")

    def _run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (vectors,) = self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
        return vectors

    async def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, input_ids, attention_mask)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
