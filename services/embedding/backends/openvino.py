"""OpenVINO in process: the exact tier's batches, and the fast tier (bf16 or static int8)."""

from __future__ import annotations

import asyncio
import os
import queue
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from services.embedding.bundle import ONNX_INPUTS
from services.embedding.core.ports import EmbeddingBackend


class OpenVinoBackend(EmbeddingBackend):
    runtime = "openvino"

    def __init__(self, model_path: Path, *, precision: str, threads: int = 0, streams: int = 1) -> None:
        import openvino as ov

        config: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": precision,
            "INFERENCE_NUM_THREADS": threads or (os.cpu_count() or 1),
        }
        # One stream answers a lone request with every core; several keep each core on its own batch.
        config |= {"NUM_STREAMS": streams} if streams > 1 else {"PERFORMANCE_HINT": "LATENCY"}
        compiled = ov.Core().compile_model(str(model_path), "CPU", config)
        self.concurrency = streams
        self._requests: queue.SimpleQueue[ov.InferRequest] = queue.SimpleQueue()
        for _ in range(streams):
            self._requests.put(compiled.create_infer_request())
        self._executor = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="openvino")

    def _run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        request = self._requests.get()
        try:
            inputs = dict(zip(ONNX_INPUTS, (input_ids, attention_mask), strict=True))
            outputs = request.infer(inputs, share_inputs=True, share_outputs=True)
            return np.array(outputs[0], dtype=np.float32)  # a copy: the request reuses its buffer
        finally:
            self._requests.put(request)

    async def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, input_ids, attention_mask)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
