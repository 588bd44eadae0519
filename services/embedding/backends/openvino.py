"""OpenVINO in process: the fast tier where the CPU computes bf16 natively."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from services.embedding.bundle import ONNX_INPUTS
from services.embedding.core.ports import EmbeddingBackend


class OpenVinoBackend(EmbeddingBackend):
    runtime = "openvino"

    def __init__(self, model_path: Path, *, precision: str, threads: int = 0) -> None:
        import openvino as ov

        config = {
            "INFERENCE_PRECISION_HINT": precision,
            "INFERENCE_NUM_THREADS": threads or (os.cpu_count() or 1),
            "PERFORMANCE_HINT": "LATENCY",
        }
        compiled = ov.Core().compile_model(str(model_path), "CPU", config)
        self._request = compiled.create_infer_request()
        # One inference at a time: the request reuses its output buffer, and uses every core.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="openvino")

    def _run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        outputs = self._request.infer(dict(zip(ONNX_INPUTS, (input_ids, attention_mask), strict=True)))
        return np.array(outputs[0], dtype=np.float32)  # a copy: the buffer is reused

    async def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, input_ids, attention_mask)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
