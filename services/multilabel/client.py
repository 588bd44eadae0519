"""Typed client for the multi-label service."""

from __future__ import annotations

from rosemesh.multilabel.v1 import multilabel_pb2, multilabel_pb2_grpc

from services.multilabel.convert import POLICY_CODES
from services.multilabel.core.bundle import Policy
from services.runtime.client import ServiceClient


class MultiLabelClient(ServiceClient):
    def __init__(self, target: str, **options: object) -> None:
        super().__init__(target, **options)  # type: ignore[arg-type]
        self._stub = self.stub(multilabel_pb2_grpc.MultiLabelServiceStub)

    async def predict(
        self, texts: list[str], model: str = "", policy: Policy | None = None, version: str = ""
    ) -> multilabel_pb2.PredictResponse:
        request = multilabel_pb2.PredictRequest(
            texts=texts, model=model, version=version, policy=POLICY_CODES[policy] if policy else 0
        )
        return await self.call(self._stub.Predict, request)

    async def explain(self, request: multilabel_pb2.ExplainRequest) -> multilabel_pb2.ExplainResponse:
        return await self.call(self._stub.Explain, request)

    async def list_models(self) -> list[multilabel_pb2.ModelInfo]:
        return list((await self.call(self._stub.ListModels, multilabel_pb2.ListModelsRequest())).models)
