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

    async def classify_task(
        self, texts: list[str], task: str, tenant: str = "", timeout_s: float | None = None
    ) -> earlyexit_pb2.ClassifyResponse:
        """Classify with a tenant's adapted task (see ``adapt``)."""
        request = earlyexit_pb2.ClassifyRequest(texts=texts, task=task, tenant=tenant)
        return await self.call(self._stub.Classify, request, timeout_s=timeout_s)

    async def explain(
        self, request: earlyexit_pb2.ExplainRequest, timeout_s: float | None = None
    ) -> earlyexit_pb2.ExplainResponse:
        """Word attributions and the exit trace for a model's or a task's classification."""
        return await self.call(self._stub.Explain, request, timeout_s=timeout_s)

    async def adapt(self, request: earlyexit_pb2.AdaptRequest) -> earlyexit_pb2.Operation:
        return (await self.call(self._stub.Adapt, request)).operation

    async def get_operation(self, operation_id: str) -> earlyexit_pb2.Operation:
        request = earlyexit_pb2.GetOperationRequest(id=operation_id)
        return (await self.call(self._stub.GetOperation, request)).operation

    async def cancel_operation(self, operation_id: str) -> earlyexit_pb2.Operation:
        request = earlyexit_pb2.CancelOperationRequest(id=operation_id)
        return (await self.call(self._stub.CancelOperation, request)).operation

    async def list_adapters(self, tenant: str = "") -> list[earlyexit_pb2.AdapterInfo]:
        response = await self.call(self._stub.ListAdapters, earlyexit_pb2.ListAdaptersRequest(tenant=tenant))
        return list(response.adapters)

    async def list_models(self) -> list[earlyexit_pb2.ModelInfo]:
        response = await self.call(self._stub.ListModels, earlyexit_pb2.ListModelsRequest())
        return list(response.models)
