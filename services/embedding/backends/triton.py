"""Triton Inference Server over gRPC: the same exported graph, served by a Triton model.

The model (``deploy/triton/embedding``) takes ``input_ids`` and ``attention_mask`` (INT64
[batch, seq]) and returns ``embeddings`` (FP32 [batch, dimension]), like the ONNX graph.
"""

from __future__ import annotations

import asyncio

import numpy as np

from services.adapters.tritonserver_client import TritonModels
from services.embedding.bundle import ONNX_INPUTS, ONNX_OUTPUT
from services.embedding.core.ports import EmbeddingBackend


class TritonBackend(EmbeddingBackend):
    runtime = "triton"

    def __init__(
        self, url: str, model_name: str, *, model_version: str = "", timeout_s: float = 30.0
    ) -> None:
        self.model_name = model_name
        self.triton = TritonModels(url, model_version=model_version, timeout_s=timeout_s)

    async def start(self) -> None:
        await self.triton.start([self.model_name])

    @property
    def max_batch_size(self) -> int:
        """The model's batch limit, read from its config at start; 0 means none."""
        return self.triton.max_batch_size(self.model_name)

    async def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        step = self.max_batch_size or len(input_ids)
        # Larger batches than the model accepts go as concurrent chunks for Triton to schedule.
        chunks = await asyncio.gather(
            *(
                self._infer(input_ids[i : i + step], attention_mask[i : i + step])
                for i in range(0, len(input_ids), step)
            )
        )
        return np.concatenate(chunks)

    async def _infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = dict(
            zip(ONNX_INPUTS, (input_ids.astype(np.int64), attention_mask.astype(np.int64)), strict=True)
        )
        outputs = await self.triton.infer(self.model_name, feed, [ONNX_OUTPUT])
        return outputs[ONNX_OUTPUT]

    async def close(self) -> None:
        await self.triton.close()
