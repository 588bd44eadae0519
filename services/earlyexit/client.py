"""Typed client for the early-exit service, for product backends and the benchmark."""

from __future__ import annotations

from rosemesh.earlyexit.v1 import earlyexit_pb2, earlyexit_pb2_grpc

from services.earlyexit.convert import policy_to_proto
from services.earlyexit.core.policy import ExitPolicy
from services.runtime.client import ServiceClient


class EarlyExitClient(ServiceClient):
    def __init__(self, target: str, **options: object) -> None:
        super().__init__(target, **options)  # type: ignore[arg-type]
        self._stub = self.stub(earlyexit_pb2_grpc.EarlyExitServiceStub)

    async def classify(
        self, texts: list[str], model: str = "", policy: ExitPolicy | None = None, timeout_s: float | None = None
    ) -> earlyexit_pb2.ClassifyResponse:
        request = earlyexit_pb2.ClassifyRequest(texts=texts, model=model)
        if policy is not None:
            request.policy.CopyFrom(policy_to_proto(policy))
        return await self.call(self._stub.Classify, request, timeout_s=timeout_s)

    async def list_models(self) -> list[earlyexit_pb2.ModelInfo]:
        response = await self.call(self._stub.ListModels, earlyexit_pb2.ListModelsRequest())
        return list(response.models)
