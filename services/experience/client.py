"""Typed client for the experience service: record after answering, orchestrate before asking."""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence

from rosemesh.experience.v1 import experience_pb2 as pb
from rosemesh.experience.v1 import experience_pb2_grpc

from services.runtime.client import ServiceClient


class ExperienceClient(ServiceClient):
    def __init__(self, target: str, tenant: str, **options: object) -> None:
        super().__init__(target, **options)  # type: ignore[arg-type]
        self.tenant = tenant
        self._stub = self.stub(experience_pb2_grpc.ExperienceServiceStub)

    async def record(self, question: str, paths: Sequence[tuple[str, str]]) -> pb.RecordResponse:
        """``paths`` are (reasoning, final answer) pairs sampled for ``question``."""
        request = pb.RecordRequest(
            tenant=self.tenant,
            question=question,
            paths=[pb.ReasoningPath(reasoning=r, answer=a) for r, a in paths],
        )
        return await self.call(self._stub.Record, request)

    async def record_stream(
        self, items: AsyncIterable[tuple[str, Sequence[tuple[str, str]]]], timeout_s: float = 600.0
    ) -> pb.RecordStreamResponse:
        """Bulk load: one (question, paths) item per message, acknowledged together at the end."""

        async def messages() -> AsyncIterable[pb.RecordStreamRequest]:
            async for question, paths in items:
                yield pb.RecordStreamRequest(
                    record=pb.RecordRequest(
                        tenant=self.tenant,
                        question=question,
                        paths=[pb.ReasoningPath(reasoning=r, answer=a) for r, a in paths],
                    )
                )

        # A stream cannot be replayed, so no retries: call the stub directly.
        return await self._stub.RecordStream(messages(), timeout=timeout_s)

    async def orchestrate(
        self, question: str, k: int, strategy: int = pb.STRATEGY_ROSE, **options: object
    ) -> pb.OrchestrateResponse:
        request = pb.OrchestrateRequest(tenant=self.tenant, question=question, k=k, strategy=strategy, **options)
        return await self.call(self._stub.Orchestrate, request)

    async def get(self, experience_id: str = "", question: str = "") -> pb.Experience:
        request = pb.GetRequest(tenant=self.tenant, id=experience_id) if experience_id else pb.GetRequest(
            tenant=self.tenant, question=question
        )
        return (await self.call(self._stub.Get, request)).experience

    async def delete(self, experience_id: str) -> bool:
        return (await self.deletion(experience_id)).deleted

    async def deletion(self, experience_id: str) -> pb.DeleteResponse:
        """Delete, with the consistency token that Orchestrate takes for read-your-writes."""
        return await self.call(self._stub.Delete, pb.DeleteRequest(tenant=self.tenant, id=experience_id))

    async def list(self, page_size: int = 0, page_token: str = "") -> pb.ListResponse:
        request = pb.ListRequest(tenant=self.tenant, page_size=page_size, page_token=page_token)
        return await self.call(self._stub.List, request)

    async def stats(self) -> pb.StatsResponse:
        return await self.call(self._stub.Stats, pb.StatsRequest(tenant=self.tenant))

    async def list_held(self) -> list[pb.HeldExperience]:
        """Records orchestration does not hand out, with why and who wrote them."""
        return list((await self.call(self._stub.ListHeld, pb.ListHeldRequest(tenant=self.tenant))).held)
