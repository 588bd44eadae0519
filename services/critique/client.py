"""Typed client for the critique service."""

from __future__ import annotations

from collections.abc import Sequence

from rosemesh.critique.v1 import critique_pb2 as pb
from rosemesh.critique.v1 import critique_pb2_grpc

from services.runtime.client import ServiceClient


class CritiqueClient(ServiceClient):
    def __init__(self, target: str, **options: object) -> None:
        super().__init__(target, **options)  # type: ignore[arg-type]
        self._stub = self.stub(critique_pb2_grpc.CritiqueServiceStub)

    async def score(
        self,
        query: str,
        response: str,
        *,
        rubric: str = "",
        reference: str = "",
        common_answers: Sequence[str] = (),
        scorer: pb.Scorer = pb.SCORER_UNSPECIFIED,
    ) -> pb.ScoreResponse:
        request = pb.ScoreRequest(
            rubric=rubric,
            query=query,
            response=response,
            reference=reference,
            common_answers=common_answers,
            scorer=scorer,
        )
        return await self.call(self._stub.Score, request)

    async def batch_score(self, items: Sequence[pb.ScoreItem], rubric: str = "") -> pb.BatchScoreResponse:
        return await self.call(self._stub.BatchScore, pb.BatchScoreRequest(rubric=rubric, items=items))

    async def compare(
        self,
        query: str,
        response_a: str,
        response_b: str,
        *,
        rubric: str = "",
        reference: str = "",
        single_order: bool = False,
        scorer: pb.Scorer = pb.SCORER_UNSPECIFIED,
    ) -> pb.CompareResponse:
        request = pb.CompareRequest(
            rubric=rubric,
            query=query,
            response_a=response_a,
            response_b=response_b,
            reference=reference,
            single_order=single_order,
            scorer=scorer,
        )
        return await self.call(self._stub.Compare, request)

    async def best_of_n(
        self,
        query: str,
        candidates: Sequence[str],
        *,
        rubric: str = "",
        reference: str = "",
        min_margin: float | None = None,
        scorer: pb.Scorer = pb.SCORER_UNSPECIFIED,
    ) -> pb.BestOfNResponse:
        request = pb.BestOfNRequest(
            rubric=rubric,
            query=query,
            candidates=candidates,
            reference=reference,
            min_margin=min_margin,
            scorer=scorer,
        )
        return await self.call(self._stub.BestOfN, request)

    async def export_preferences(
        self, items: Sequence[pb.PreferenceItem], *, rubric: str = "", min_margin: float | None = None
    ) -> list[pb.ExportPreferencesResponse]:
        request = pb.ExportPreferencesRequest(rubric=rubric, items=items, min_margin=min_margin)
        stream = self._stub.ExportPreferences(request, timeout=self.timeout_s)
        return [response async for response in stream]

    async def list_rubrics(self) -> list[pb.Rubric]:
        return list((await self.call(self._stub.ListRubrics, pb.ListRubricsRequest())).rubrics)
