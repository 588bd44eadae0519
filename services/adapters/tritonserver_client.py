"""An async gRPC client for models on a Triton Inference Server, shared by every backend.

Triton's transport failures become BackendUnavailable; anything else Triton reports is a
failure of the request itself and propagates as it is. A circuit breaker per server turns a dead
Triton into an immediate BackendUnavailable (CircuitOpen) until a trial call succeeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from services.common.breaker import CircuitBreaker
from services.common.errors import BackendUnavailable

# gRPC codes that mean Triton or the model cannot serve now, rather than a bad request.
_UNAVAILABLE_CODES = frozenset(
    {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED", "StatusCode.NOT_FOUND"}
)


class TritonModels:
    """A connection to one Triton server, and the configs of the models it must serve."""

    def __init__(
        self,
        url: str,
        *,
        model_version: str = "",
        timeout_s: float = 30.0,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.url = url
        self.model_version = model_version
        self.timeout_s = timeout_s
        self.breaker = breaker or CircuitBreaker(f"triton {url}")
        self.configs: dict[str, dict[str, Any]] = {}
        self._client: grpcclient.InferenceServerClient | None = None

    async def start(self, models: Sequence[str]) -> None:
        """Connect and check that every model in ``models`` is ready; raise BackendUnavailable if not."""
        # The aio channel binds to the running loop, so it is created here, not in __init__.
        self._client = grpcclient.InferenceServerClient(self.url)
        try:
            for model in models:
                self.configs[model] = await self._ready_model_config(self._client, model)
        except BaseException:
            await self.close()
            raise

    async def _ready_model_config(
        self, client: grpcclient.InferenceServerClient, model: str
    ) -> dict[str, Any]:
        where = f"Triton at {self.url}"
        try:
            if not await client.is_server_ready(client_timeout=self.timeout_s):
                raise BackendUnavailable(f"{where} is not ready")
            if not await client.is_model_ready(model, self.model_version, client_timeout=self.timeout_s):
                raise BackendUnavailable(f"{where} has no ready model {model!r}")
            response = await client.get_model_config(
                model, self.model_version, as_json=True, client_timeout=self.timeout_s
            )
        except InferenceServerException as exc:
            raise BackendUnavailable(f"{where} cannot be reached: {exc.message()}") from exc
        return response["config"]

    def max_batch_size(self, model: str) -> int:
        """The model's batch limit from its config; 0 means none."""
        return int(self.configs.get(model, {}).get("max_batch_size", 0))

    async def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        if self._client is None:
            raise BackendUnavailable(f"Triton client for {model!r} is not started")
        tensors = []
        for name, array in inputs.items():
            array = np.ascontiguousarray(array)
            tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        with self.breaker.guard():
            try:
                result = await self._client.infer(
                    model,
                    tensors,
                    model_version=self.model_version,
                    outputs=[grpcclient.InferRequestedOutput(name) for name in outputs],
                    client_timeout=self.timeout_s,
                )
            except InferenceServerException as exc:
                # A server going down fails BLS steps with INTERNAL "... Server not ready".
                if exc.status() in _UNAVAILABLE_CODES or "Server not ready" in (exc.message() or ""):
                    raise BackendUnavailable(
                        f"Triton at {self.url} failed to run {model!r}: {exc.message()}"
                    ) from exc
                raise
        return {name: result.as_numpy(name) for name in outputs}

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
