"""Triton Inference Server over gRPC: the same exported graph, served by a Triton model.

The model (``deploy/triton/embedding``) takes ``input_ids`` and ``attention_mask`` (INT64
[batch, seq]) and returns ``embeddings`` (FP32 [batch, dimension]), like the ONNX graph.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from services.embedding.backends.base import EmbeddingBackend
from services.embedding.export import ONNX_INPUTS, ONNX_OUTPUT
from services.runtime.errors import BackendUnavailable

# gRPC codes that mean Triton or the model cannot serve now, rather than a bad request.
_UNAVAILABLE_CODES = frozenset(
    {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED", "StatusCode.NOT_FOUND"}
)


class TritonBackend(EmbeddingBackend):
    runtime = "triton"

    def __init__(
        self, url: str, model_name: str, *, model_version: str = "", timeout_s: float = 30.0
    ) -> None:
        self.url = url
        self.model_name = model_name
        self.model_version = model_version
        self.timeout_s = timeout_s
        self.max_batch_size = 0  # read from the model's config in start(); 0 means no limit
        self._client: grpcclient.InferenceServerClient | None = None

    async def start(self) -> None:
        # The aio channel binds to the running loop, so it is created here, not in __init__.
        self._client = grpcclient.InferenceServerClient(self.url)
        try:
            config = await self._ready_model_config(self._client)
        except BaseException:
            await self.close()
            raise
        self.max_batch_size = int(config.get("max_batch_size", 0))

    async def _ready_model_config(self, client: grpcclient.InferenceServerClient) -> dict[str, Any]:
        where = f"Triton at {self.url}"
        try:
            if not await client.is_server_ready(client_timeout=self.timeout_s):
                raise BackendUnavailable(f"{where} is not ready")
            if not await client.is_model_ready(
                self.model_name, self.model_version, client_timeout=self.timeout_s
            ):
                raise BackendUnavailable(f"{where} has no ready model {self.model_name!r}")
            response = await client.get_model_config(
                self.model_name, self.model_version, as_json=True, client_timeout=self.timeout_s
            )
        except InferenceServerException as exc:
            raise BackendUnavailable(f"{where} cannot be reached: {exc.message()}") from exc
        return response["config"]

    async def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if self._client is None:
            raise BackendUnavailable(f"Triton backend for {self.model_name!r} is not started")
        step = self.max_batch_size or len(input_ids)
        if len(input_ids) <= step:
            return await self._infer(self._client, input_ids, attention_mask)
        # Larger batches than the model accepts go as concurrent chunks for Triton to schedule.
        chunks = await asyncio.gather(
            *(
                self._infer(self._client, input_ids[i : i + step], attention_mask[i : i + step])
                for i in range(0, len(input_ids), step)
            )
        )
        return np.concatenate(chunks)

    async def _infer(
        self, client: grpcclient.InferenceServerClient, input_ids: np.ndarray, attention_mask: np.ndarray
    ) -> np.ndarray:
        inputs = []
        for name, array in zip(ONNX_INPUTS, (input_ids, attention_mask), strict=True):
            tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(np.ascontiguousarray(array, dtype=np.int64))
            inputs.append(tensor)
        try:
            result = await client.infer(
                self.model_name,
                inputs,
                model_version=self.model_version,
                outputs=[grpcclient.InferRequestedOutput(ONNX_OUTPUT)],
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            if exc.status() in _UNAVAILABLE_CODES:
                raise BackendUnavailable(
                    f"Triton at {self.url} failed to run {self.model_name!r}: {exc.message()}"
                ) from exc
            raise
        return result.as_numpy(ONNX_OUTPUT)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
