"""The experience service's face: validates requests, maps protobuf to the pool and back."""

from __future__ import annotations

import base64
import binascii
import math
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Literal

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict
from rosemesh.experience.v1 import experience_pb2 as pb
from rosemesh.experience.v1 import experience_pb2_grpc
from threadpoolctl import threadpool_limits

from kernels.bucketed_selection import BucketReason
from services.adapters.embedding_service import RemoteEmbedder
from services.common.errors import NotFound, Validator
from services.experience.core.consistency import Token, TokenError
from services.experience.core.defence import Admission, BackdoorScreen, RecordVerdict, ScreenSettings
from services.experience.core.experience import Experience, experience_id
from services.experience.core.orchestrate import DEFAULT_MMR_LAMBDA, DEFAULT_UNCERTAINTY_RATIO, Bucketing
from services.experience.core.pool import (
    ExperiencePool,
    OrchestrateQuery,
    PoolSettings,
    RecordInput,
    SearchMode,
    Strategy,
)
from services.experience.core.ports import ExperienceStore
from services.experience.core.record import ReasoningPath
from services.runtime.config import ServiceSettings
from services.runtime.security import acting_tenant, caller_writer
from services.runtime.server import Service, StartProgress

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ExperienceService"].full_name


def default_data_dir() -> Path:
    data = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return data / "rosemesh" / "experience"


class ExperienceSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ROSEMESH_EXPERIENCE_")

    port: int = Field(50052, ge=0, le=65535)
    metrics_port: int = Field(9465, ge=0, le=65535)
    embedding_target: str = Field("127.0.0.1:50051", description="address of the embedding service")
    embedding_timeout_s: float = Field(10.0, gt=0, description="deadline of each embedding call")
    storage: Literal["edge", "qdrant"] = Field("edge", description="embedded Qdrant engine, or a Qdrant server")
    data_dir: Path = Field(default_factory=default_data_dir, description="where the embedded engine keeps data")
    qdrant_url: str = Field("", description="Qdrant server URL, for --storage qdrant")
    qdrant_api_key: SecretStr = Field(SecretStr(""), description="Qdrant API key, for --storage qdrant")
    qdrant_collection: str = Field("rosemesh_experiences", description="collection on the Qdrant server")
    max_k: int = Field(64, ge=1, description="largest k Orchestrate accepts")
    sublinear_threshold: int = Field(
        PoolSettings.sublinear_threshold, ge=1, description="pool size from which RoSE runs sublinear unless a request says otherwise"
    )
    staleness_s: float = Field(
        PoolSettings.staleness_s, gt=0, description="longest a replica's view may lag other replicas' writes to a shared store"
    )
    catch_up_window_s: float = Field(
        PoolSettings.catch_up_window_s, gt=0, description="how far behind its last change marker a catch-up re-reads (twice the clock skew, and more)"
    )
    tombstone_retention_s: float = Field(
        PoolSettings.tombstone_retention_s, gt=0, description="how long a shared store keeps deletes as tombstones for replicas catching up"
    )
    mirror_budget_bytes: int = Field(
        PoolSettings.mirror_budget_bytes, ge=1 << 16, description="resident bytes of all tenants' mirrors; least recently used ones go past it"
    )
    selection_workers: int = Field(PoolSettings.selection_workers, ge=1, description="selections run at once, in worker threads")
    selection_queue: int = Field(PoolSettings.selection_queue, ge=0, description="selections waiting beyond those before RESOURCE_EXHAUSTED")
    load_wait_s: float = Field(
        PoolSettings.load_wait_s, gt=0, description="longest an Orchestrate without a deadline waits for its tenant's pool to load"
    )
    max_paths: int = Field(100, ge=1, description="most reasoning paths per Record")
    max_question_bytes: int = Field(8 * 1024, ge=1)
    max_reasoning_bytes: int = Field(32 * 1024, ge=1)
    max_answer_bytes: int = Field(1024, ge=1)
    poison_screen: bool = Field(
        True, description="BadChain defence: quarantine records whose anomalous reasoning co-occurs with a question trigger"
    )
    poison_min_support: int = Field(
        ScreenSettings.min_support, ge=2, description="anomalous records a trigger must be carried by to be flagged"
    )
    poison_alpha: float = Field(
        ScreenSettings.alpha, gt=0, lt=1, description="binomial tail below which a question feature is judged a trigger"
    )
    admission: Admission = Field(
        Admission.SCREENED,
        description="which records enter orchestration: 'screened' (all the screen does not quarantine), "
        "'checked' (nor those whose reasoning does not follow or that share a step across unrelated questions) "
        "or 'verified' (only those whose answer is shown to follow)",
    )
    trusted_writers: list[str] = Field(
        default_factory=list,
        description="writers (from the tokens file) whose records follow --admission; others follow "
        "--untrusted-admission. Empty: every writer is trusted",
    )
    untrusted_admission: Admission = Field(
        Admission.VERIFIED,
        description="admission of untrusted writers' records: 'verified' (held until the check shows their answer "
        "follows), 'checked' (held if it shows it does not) or 'never'",
    )
    default_page_size: int = Field(50, ge=1)
    max_page_size: int = Field(500, ge=1)

    @model_validator(mode="after")
    def _qdrant_needs_url(self) -> ExperienceSettings:
        if self.storage == "qdrant" and not self.qdrant_url:
            raise ValueError("--storage qdrant needs --qdrant-url (ROSEMESH_EXPERIENCE_QDRANT_URL)")
        return self


def build_store(settings: ExperienceSettings, dimension: int) -> ExperienceStore:
    if settings.storage == "qdrant":
        from services.experience.backends.qdrant_server import QdrantServerStore

        return QdrantServerStore.from_url(
            settings.qdrant_url,
            dimension,
            api_key=settings.qdrant_api_key.get_secret_value() or None,
            collection=settings.qdrant_collection,
        )
    from services.experience.backends.qdrant_edge import QdrantEdgeStore

    return QdrantEdgeStore(settings.data_dir, dimension)


def screen_settings(settings: ExperienceSettings) -> ScreenSettings | None:
    """The BadChain screen's settings, None where the screen is off."""
    if not settings.poison_screen:
        return None
    return ScreenSettings(
        min_support=settings.poison_min_support,
        alpha=settings.poison_alpha,
        admission=settings.admission,
        trusted_writers=frozenset(settings.trusted_writers),
        untrusted_admission=settings.untrusted_admission,
    )


def pool_settings(settings: ExperienceSettings) -> PoolSettings:
    """The pool's settings: the service settings of the same names."""
    return PoolSettings(**{f.name: getattr(settings, f.name) for f in fields(PoolSettings)})


_STRATEGIES = {
    pb.STRATEGY_UNSPECIFIED: Strategy.ROSE,
    pb.STRATEGY_ROSE: Strategy.ROSE,
    pb.STRATEGY_SIMILARITY_TOPK: Strategy.SIMILARITY_TOPK,
    pb.STRATEGY_MMR: Strategy.MMR,
    pb.STRATEGY_RANDOM: Strategy.RANDOM,
}
_STRATEGY_ENUM = {value: key for key, value in _STRATEGIES.items() if key != pb.STRATEGY_UNSPECIFIED}
_BUCKETINGS = {
    pb.BUCKETING_UNSPECIFIED: Bucketing.EQUAL_WIDTH,
    pb.BUCKETING_EQUAL_WIDTH: Bucketing.EQUAL_WIDTH,
    pb.BUCKETING_EQUAL_COUNT: Bucketing.EQUAL_COUNT,
}
_SEARCH_MODES = {
    pb.SEARCH_MODE_UNSPECIFIED: SearchMode.AUTO,
    pb.SEARCH_MODE_EXACT: SearchMode.EXACT,
    pb.SEARCH_MODE_SUBLINEAR: SearchMode.SUBLINEAR,
}
_SEARCH_MODE_ENUM = {SearchMode.EXACT: pb.SEARCH_MODE_EXACT, SearchMode.SUBLINEAR: pb.SEARCH_MODE_SUBLINEAR}
_BUCKETING_ENUM = {Bucketing.EQUAL_WIDTH: pb.BUCKETING_EQUAL_WIDTH, Bucketing.EQUAL_COUNT: pb.BUCKETING_EQUAL_COUNT}


def _timestamp(seconds: float) -> Timestamp:
    # Times are kept to the millisecond; rounding absorbs the last-bit drift of stored doubles.
    stamp = Timestamp()
    stamp.FromMilliseconds(round(seconds * 1000))
    return stamp


def to_proto(e: Experience) -> pb.Experience:
    return pb.Experience(
        id=e.id,
        tenant=e.tenant,
        question=e.question,
        reasoning=e.reasoning,
        answer=e.answer,
        uncertainty=e.uncertainty,
        complexity=e.complexity,
        path_count=e.path_count,
        majority_count=e.majority_count,
        create_time=_timestamp(e.create_time),
        update_time=_timestamp(e.update_time),
        writer=e.writer,
    )


def admission_to_proto(verdict: RecordVerdict) -> pb.Admission:
    return pb.Admission(
        admitted=verdict.admitted,
        reasoning_check=verdict.check.verdict.value,
        reasoning_check_detail=verdict.check.detail,
        shared_step=verdict.shared_step or "",
        trigger=verdict.trigger or "",
        writer=verdict.writer,
        writer_trusted=verdict.trusted,
        why=verdict.why,
    )


def _page_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def reason_to_proto(reason: BucketReason, uncertainty: float) -> pb.ChoiceReason:
    return pb.ChoiceReason(
        bucket_similarity_min=reason.similarity_low,
        bucket_similarity_max=reason.similarity_high,
        bucket_size=reason.members,
        bucket_min_uncertainty=reason.min_uncertainty,
        uncertainty_bound=reason.uncertainty_bound,
        uncertainty=uncertainty,
        kept=reason.kept,
        complexity_rank=reason.complexity_rank,
    )


class ExperienceServicer(experience_pb2_grpc.ExperienceServiceServicer):
    """Calls reach it only once the service has loaded (the runtime's readiness gate)."""

    def __init__(self, service: ExperienceService) -> None:
        self.service = service
        self.settings = service.settings

    @property
    def pool(self) -> ExperiencePool:
        assert self.service.pool is not None
        return self.service.pool

    @property
    def embedding_model(self) -> str:
        return self.service.embedding_model

    # -- validation -------------------------------------------------------------------------

    def _check_text(self, v: Validator, text: str, field: str, limit: int) -> None:
        if v.check(bool(text.strip()), field, "must not be empty"):
            size = len(text.encode("utf-8"))
            v.check(size <= limit, field, f"{size} bytes exceed the limit of {limit} bytes")

    def _record_input(self, v: Validator, request: pb.RecordRequest, prefix: str = "") -> RecordInput:
        s = self.settings
        tenant = acting_tenant(v, request.tenant, f"{prefix}tenant")
        self._check_text(v, request.question, f"{prefix}question", s.max_question_bytes)
        v.check(len(request.paths) > 0, f"{prefix}paths", "must contain at least one reasoning path")
        v.check(
            len(request.paths) <= s.max_paths,
            f"{prefix}paths",
            f"{len(request.paths)} paths exceed the limit of {s.max_paths}",
        )
        for i, path in enumerate(request.paths[: s.max_paths]):
            self._check_text(v, path.reasoning, f"{prefix}paths[{i}].reasoning", s.max_reasoning_bytes)
            self._check_text(v, path.answer, f"{prefix}paths[{i}].answer", s.max_answer_bytes)
        paths = [ReasoningPath(p.reasoning, p.answer) for p in request.paths]
        return RecordInput(tenant, request.question, paths, caller_writer())

    def _key(self, v: Validator, request: pb.GetRequest | pb.DeleteRequest) -> tuple[str, str]:
        """(tenant, experience id) named by a Get or Delete."""
        tenant = acting_tenant(v, request.tenant)
        which = request.WhichOneof("key")
        if which == "id":
            try:
                return tenant, str(uuid.UUID(request.id))
            except ValueError:
                v.check(False, "id", f"must be an experience id (a UUID); got {request.id[:80]!r}")
        elif which == "question":
            self._check_text(v, request.question, "question", self.settings.max_question_bytes)
            return tenant, experience_id(tenant, request.question)
        else:
            v.check(False, "key", "set either id or question")
        return tenant, ""

    # -- RPCs -------------------------------------------------------------------------------

    async def Record(self, request: pb.RecordRequest, context: grpc.aio.ServicerContext) -> pb.RecordResponse:
        v = Validator()
        record = self._record_input(v, request)
        v.raise_if_any()
        ((experience, created),), (token,) = await self.pool.record_many([record])
        return pb.RecordResponse(experience=to_proto(experience), created=created, consistency_token=token.encode())

    async def RecordStream(
        self, request_iterator: AsyncIterator[pb.RecordStreamRequest], context: grpc.aio.ServicerContext
    ) -> pb.RecordStreamResponse:
        created = updated = 0
        batch: list[RecordInput] = []
        written: dict[str, list[Token]] = {}

        async def flush() -> None:
            nonlocal created, updated
            if batch:
                results, tokens = await self.pool.record_many(batch)
                created += sum(1 for _, was_created in results if was_created)
                updated += sum(1 for _, was_created in results if not was_created)
                for token in tokens:
                    written.setdefault(token.tenant, []).append(token)
                batch.clear()

        position = 0
        async for message in request_iterator:
            v = Validator()
            record = self._record_input(v, message.record, prefix=f"stream[{position}].record.")
            if v.violations:
                await flush()  # the messages before the bad one stay recorded
                v.raise_if_any()
            batch.append(record)
            position += 1
            if len(batch) >= 64:
                await flush()
        await flush()
        tokens = {tenant: Token.merge(parts).encode() for tenant, parts in written.items()}
        return pb.RecordStreamResponse(created_count=created, updated_count=updated, consistency_tokens=tokens)

    async def Orchestrate(
        self, request: pb.OrchestrateRequest, context: grpc.aio.ServicerContext
    ) -> pb.OrchestrateResponse:
        s = self.settings
        v = Validator()
        tenant = acting_tenant(v, request.tenant)
        self._check_text(v, request.question, "question", s.max_question_bytes)
        v.check(1 <= request.k <= s.max_k, "k", f"must be between 1 and {s.max_k}; got {request.k}")
        v.check(request.strategy in _STRATEGIES, "strategy", f"unknown strategy {request.strategy}")
        v.check(request.bucketing in _BUCKETINGS, "bucketing", f"unknown bucketing {request.bucketing}")
        ratio = request.uncertainty_ratio if request.HasField("uncertainty_ratio") else DEFAULT_UNCERTAINTY_RATIO
        v.check(math.isfinite(ratio) and ratio >= 1, "uncertainty_ratio", f"λ must be at least 1; got {ratio}")
        mmr_lambda = request.mmr_lambda if request.HasField("mmr_lambda") else DEFAULT_MMR_LAMBDA
        v.check(0 <= mmr_lambda <= 1, "mmr_lambda", f"must be in [0, 1]; got {mmr_lambda}")
        v.check(request.search_mode in _SEARCH_MODES, "search_mode", f"unknown search mode {request.search_mode}")
        token = None
        if request.consistency_token:
            try:
                token = Token.decode(request.consistency_token, tenant)
            except TokenError as exc:
                v.check(False, "consistency_token", str(exc))
        v.raise_if_any()
        query = OrchestrateQuery(
            tenant=tenant,
            question=request.question,
            k=request.k,
            strategy=_STRATEGIES[request.strategy],
            uncertainty_ratio=ratio,
            bucketing=_BUCKETINGS[request.bucketing],
            mmr_lambda=mmr_lambda,
            seed=request.seed if request.HasField("seed") else None,
            search_mode=_SEARCH_MODES[request.search_mode],
            explain=request.explain,
        )
        result = await self.pool.orchestrate(query, token, context.time_remaining())
        return pb.OrchestrateResponse(
            demonstrations=[
                pb.Demonstration(
                    experience=to_proto(d.experience), similarity=d.similarity, bucket_index=d.bucket,
                    reason=reason_to_proto(d.reason, d.experience.uncertainty) if d.reason else None,
                    admission=admission_to_proto(d.admission) if d.admission else None,
                )  # fmt: skip
                for d in result.demonstrations
            ],
            strategy=_STRATEGY_ENUM[query.strategy],
            bucketing=_BUCKETING_ENUM[query.bucketing],
            search_mode=_SEARCH_MODE_ENUM[result.search_mode],
            uncertainty_ratio=ratio,
            pool_size=result.pool_size,
            embedding_model=self.embedding_model,
            view_age_ms=result.view_age_s * 1000,
            load_wait_ms=result.load_wait_s * 1000,
        )

    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext) -> pb.GetResponse:
        v = Validator()
        tenant, eid = self._key(v, request)
        v.raise_if_any()
        experience = await self.pool.get(tenant, eid)
        if experience is None:
            raise NotFound(f"no experience {eid} for tenant {tenant!r}")
        return pb.GetResponse(experience=to_proto(experience))

    async def Delete(self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext) -> pb.DeleteResponse:
        v = Validator()
        tenant, eid = self._key(v, request)
        v.raise_if_any()
        deleted, token = await self.pool.delete(tenant, eid)
        return pb.DeleteResponse(deleted=deleted, consistency_token=token.encode())

    async def List(self, request: pb.ListRequest, context: grpc.aio.ServicerContext) -> pb.ListResponse:
        s = self.settings
        v = Validator()
        tenant = acting_tenant(v, request.tenant)
        v.check(request.page_size >= 0, "page_size", f"must not be negative; got {request.page_size}")
        after_id = None
        if request.page_token:
            try:
                after_id = str(uuid.UUID(base64.urlsafe_b64decode(request.page_token.encode()).decode()))
            except (binascii.Error, ValueError, UnicodeDecodeError):
                v.check(False, "page_token", "is not a token this service issued")
        v.raise_if_any()
        size = min(request.page_size or s.default_page_size, s.max_page_size)
        page = await self.pool.page(tenant, after_id, size + 1)
        more = len(page) > size
        page = page[:size]
        return pb.ListResponse(
            experiences=[to_proto(e) for e in page],
            next_page_token=_page_token(page[-1].id) if more else "",
        )

    async def Stats(self, request: pb.StatsRequest, context: grpc.aio.ServicerContext) -> pb.StatsResponse:
        v = Validator()
        tenant = acting_tenant(v, request.tenant)
        v.raise_if_any()
        stats = await self.pool.stats(tenant, context.time_remaining())
        response = pb.StatsResponse(
            experience_count=stats.experience_count,
            indexed_count=stats.indexed_count,
            mean_uncertainty=stats.mean_uncertainty,
            mean_complexity=stats.mean_complexity,
            embedding_model=self.embedding_model,
            dimension=self.pool.store.dimension,
            storage_backend=self.pool.store.backend_name,
        )
        if stats.last_write_time is not None:
            response.last_write_time.CopyFrom(_timestamp(stats.last_write_time))
        return response


    async def ListHeld(self, request: pb.ListHeldRequest, context: grpc.aio.ServicerContext) -> pb.ListHeldResponse:
        v = Validator()
        tenant = acting_tenant(v, request.tenant)
        v.raise_if_any()
        held = await self.pool.screen_report(tenant, context.time_remaining())
        return pb.ListHeldResponse(
            held=[pb.HeldExperience(experience=to_proto(e), admission=admission_to_proto(verdict)) for e, verdict in held]
        )


class ExperienceService(Service):
    name = "experience"
    settings_class = ExperienceSettings
    settings: ExperienceSettings

    def __init__(self, settings: ExperienceSettings) -> None:
        super().__init__(settings)
        self.embedder: RemoteEmbedder | None = None
        self.store: ExperienceStore | None = None
        self.pool: ExperiencePool | None = None
        self.embedding_model = ""

    @property
    def service_names(self) -> Sequence[str]:
        return [SERVICE_NAME]

    def register(self, server: grpc.aio.Server) -> None:
        experience_pb2_grpc.add_ExperienceServiceServicer_to_server(ExperienceServicer(self), server)

    async def load(self, progress: StartProgress) -> None:
        settings = self.settings
        # numba's threads run the selection; OpenBLAS threads left spinning after a small numpy
        # product take their cores (the slowest of 400 sublinear selections at 1M: 114 ms with them, 11 ms without).
        threadpool_limits(1, user_api="blas")
        self.embedder = RemoteEmbedder(
            settings.embedding_target, settings.embedding_timeout_s, **settings.client_security()
        )
        default = await self.embedder.wait_ready(progress.report)
        self.embedding_model = default.name
        progress.report(f"opening the {settings.storage} store")
        self.store = build_store(settings, default.dimension)
        screening = screen_settings(settings)
        screen = BackdoorScreen(screening) if screening is not None else None
        pool = ExperiencePool(self.store, self.embedder.embed, pool_settings(settings), screen)
        progress.report("readying the selection kernels")
        await pool.start()  # tenants load on first use
        self.pool = pool

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        if self.store is not None:
            self.store.close()
        if self.embedder is not None:
            await self.embedder.close()
