"""The experience pool: Record, Orchestrate and the bookkeeping around them, per tenant."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum

import numpy as np
from prometheus_client import Gauge

from kernels import dispatch as kernels
from services.experience.core import orchestrate as algo
from services.experience.core import sublinear
from services.experience.core.defence import BackdoorScreen
from services.experience.core.experience import Experience, experience_id
from services.experience.core.mirror import PoolView, TenantMirror
from services.experience.core.ports import Embed, ExperienceStore, StoredPoint
from services.experience.core.record import ReasoningPath, summarise


class Strategy(StrEnum):
    ROSE = "rose"
    SIMILARITY_TOPK = "similarity_topk"
    MMR = "mmr"
    RANDOM = "random"


class SearchMode(StrEnum):
    AUTO = "auto"  # exact below the pool's sublinear threshold, sublinear at or above it
    EXACT = "exact"
    SUBLINEAR = "sublinear"


@dataclass(frozen=True)
class OrchestrateQuery:
    tenant: str
    question: str
    k: int
    strategy: Strategy = Strategy.ROSE
    search_mode: SearchMode = SearchMode.AUTO
    uncertainty_ratio: float = algo.DEFAULT_UNCERTAINTY_RATIO
    bucketing: algo.Bucketing = algo.Bucketing.EQUAL_WIDTH
    mmr_lambda: float = algo.DEFAULT_MMR_LAMBDA
    seed: int | None = None


@dataclass(frozen=True)
class Demonstration:
    experience: Experience
    similarity: float
    bucket: int | None


@dataclass(frozen=True)
class Orchestration:
    demonstrations: list[Demonstration]
    pool_size: int
    search_mode: SearchMode


@dataclass(frozen=True)
class PoolStats:
    experience_count: int
    indexed_count: int
    mean_uncertainty: float
    mean_complexity: float
    last_write_time: float | None


@dataclass(frozen=True)
class RecordInput:
    tenant: str
    question: str
    paths: list[ReasoningPath]


log = logging.getLogger(__name__)

POOL_SIZE = Gauge("rosemesh_experience_pool_size", "Experiences in each tenant's pool.", ["tenant"])
QUARANTINED = Gauge(
    "rosemesh_experience_quarantined", "Experiences held back from orchestration as suspected backdoors.", ["tenant"]
)

#: Pool rows sampled per tenant for the sublinear search; resampled as the pool grows.
SAMPLE_SIZE = 16_384


class ExperiencePool:
    def __init__(
        self,
        store: ExperienceStore,
        embed: Embed,
        sublinear_threshold: int = 500_000,
        screen: BackdoorScreen | None = None,
    ) -> None:
        self.store = store
        self.embed = embed
        self.sublinear_threshold = sublinear_threshold
        #: The BadChain defence; None admits every record to orchestration.
        self.screen = screen
        self._quarantine_counts: dict[str, int] = {}
        self.mirrors: dict[str, TenantMirror] = {}
        self.samples: dict[str, tuple[int, PoolView]] = {}  # tenant -> (pool size when drawn, sample)
        self.last_write: dict[str, float] = {}
        # Writes are serialised so that "created" is exact and create_time survives updates.
        self._write_lock = asyncio.Lock()

    def _mirror(self, tenant: str) -> TenantMirror:
        if tenant not in self.mirrors:
            self.mirrors[tenant] = TenantMirror(self.store.dimension)
        return self.mirrors[tenant]

    async def load(self) -> None:
        """Rebuild the mirrors from the store, and ready the selection kernel (at start)."""

        def scan() -> None:
            for point in self.store.scroll():
                e = point.experience
                self._mirror(e.tenant).upsert(e.id, point.vector, e.uncertainty, e.complexity)
                self.last_write[e.tenant] = max(self.last_write.get(e.tenant, 0.0), e.update_time)
                if self.screen is not None:
                    self.screen.add(e.tenant, e.id, e.question, e.reasoning)

        await asyncio.to_thread(scan)
        for mirror in self.mirrors.values():
            await asyncio.to_thread(mirror.catch_up)
            if mirror.size >= self.sublinear_threshold:  # its RoSE runs sublinear from the first call
                await self._partition(mirror)
        await asyncio.to_thread(kernels.warm_up)
        for tenant, mirror in self.mirrors.items():
            POOL_SIZE.labels(tenant).set(mirror.size)
            self._count_quarantined(tenant)

    def quarantined(self, tenant: str) -> set[str]:
        """Experiences held back from orchestration as suspected backdoors (still stored)."""
        return self.screen.quarantined(tenant) if self.screen is not None else set()

    def _count_quarantined(self, tenant: str) -> None:
        count = len(self.quarantined(tenant))
        if count > self._quarantine_counts.get(tenant, 0):
            log.warning("suspected backdoor experiences quarantined", extra={"tenant": tenant, "count": count})
        self._quarantine_counts[tenant] = count
        QUARANTINED.labels(tenant).set(count)

    async def record_many(self, inputs: Sequence[RecordInput]) -> list[tuple[Experience, bool]]:
        """Record several answered questions; durable and visible to Orchestrate on return.

        A question repeated within ``inputs`` is recorded once per repeat, the last one winning.
        """
        vectors = await self.embed([i.question for i in inputs])
        now = round(time.time(), 3)  # millisecond times survive the payload round trip exactly
        summaries = [summarise(i.paths) for i in inputs]
        async with self._write_lock:
            ids = [experience_id(i.tenant, i.question) for i in inputs]
            existing = await asyncio.to_thread(self._existing, inputs, ids)
            results: list[tuple[Experience, bool]] = []
            points: dict[str, StoredPoint] = {}
            for record, eid, summary, vector in zip(inputs, ids, summaries, vectors, strict=True):
                before = points[eid].experience if eid in points else existing.get(eid)
                experience = Experience(
                    **asdict(summary),
                    id=eid,
                    tenant=record.tenant,
                    question=record.question,
                    create_time=before.create_time if before else now,
                    update_time=now,
                )
                points[eid] = StoredPoint(experience, vector)
                results.append((experience, before is None))
            await asyncio.to_thread(self.store.upsert, list(points.values()))
            for point in points.values():
                e = point.experience
                self._mirror(e.tenant).upsert(e.id, point.vector, e.uncertainty, e.complexity)
                self.last_write[e.tenant] = now
                if self.screen is not None:
                    self.screen.add(e.tenant, e.id, e.question, e.reasoning)
                POOL_SIZE.labels(e.tenant).set(self.mirrors[e.tenant].size)
            for tenant in {point.experience.tenant for point in points.values()}:
                self.mirrors[tenant].catch_up()  # the write pays for its codes (22 µs a row), not the next read
                self._count_quarantined(tenant)
        return results

    def _existing(self, inputs: Sequence[RecordInput], ids: list[str]) -> dict[str, Experience]:
        by_tenant: dict[str, list[str]] = {}
        for record, eid in zip(inputs, ids, strict=True):
            by_tenant.setdefault(record.tenant, []).append(eid)
        found: dict[str, Experience] = {}
        for tenant, tenant_ids in by_tenant.items():
            found.update(self.store.get_many(tenant, tenant_ids))
        return found

    def _sample(self, tenant: str, mirror: TenantMirror) -> PoolView:
        drawn = self.samples.get(tenant)
        if drawn is None or abs(mirror.size - drawn[0]) > 0.05 * drawn[0]:
            drawn = (mirror.size, mirror.sample(SAMPLE_SIZE, np.random.default_rng(mirror.size)))
            self.samples[tenant] = drawn
        return drawn[1]

    async def _partition(self, mirror: TenantMirror) -> None:
        """Partition the mirror for the sublinear search if it has none yet, or has grown
        REGROWTH times over since; writes wait meanwhile, orchestration of other kinds goes on."""
        if not mirror.partition_due():
            return
        async with self._write_lock:
            if mirror.partition_due():  # again: writes or deletes may have run while this waited
                started = time.monotonic()
                mirror.view()  # codes caught up: the loop only reads the mirror during the build
                mirror.partition = await asyncio.to_thread(mirror.partitioned)
                log.info("partitioned %d experiences in %.1f s", mirror.size, time.monotonic() - started)

    def resolve_mode(self, query: OrchestrateQuery, pool_size: int) -> str:
        """Sublinear serves RoSE only; the baselines are exact (they rank from the int16 codes)."""
        if query.strategy != Strategy.ROSE:
            return SearchMode.EXACT
        if query.search_mode == SearchMode.AUTO:
            return SearchMode.SUBLINEAR if pool_size >= self.sublinear_threshold else SearchMode.EXACT
        return query.search_mode

    async def orchestrate(self, query: OrchestrateQuery) -> Orchestration:
        (vector,) = await self.embed([query.question])
        vector = vector.astype(np.float32)
        mirror = self.mirrors.get(query.tenant)
        if mirror is None or mirror.size == 0:
            return Orchestration([], 0, self.resolve_mode(query, 0))
        mode = self.resolve_mode(query, mirror.size)
        if mode == SearchMode.SUBLINEAR:
            await self._partition(mirror)
            if mirror.partition is None:  # emptied while it waited
                return Orchestration([], 0, mode)
            # Quarantined experiences leave the pool before planning, as in exact.
            quarantined = self.quarantined(query.tenant)
            excluded_rows = np.array([mirror.row_of[i] for i in quarantined if i in mirror.row_of], dtype=np.int64)
            pool_size = mirror.size - len(excluded_rows)
            sample = self._sample(query.tenant, mirror).without(quarantined)
            # No await from here to the picks' ids: the mirror holds still.
            picks = sublinear.select(
                mirror, vector, sample, pool_size, query.k, query.uncertainty_ratio, excluded_rows
            )
            chosen = [(p.experience_id, p.similarity, p.bucket) for p in picks]
            return await self._demonstrations(query.tenant, chosen, pool_size, mode)
        # From here to the picks' ids, nothing awaits: the view cannot change underneath.
        pool = mirror.view().without(self.quarantined(query.tenant))
        if query.strategy == Strategy.ROSE:
            selection = kernels.select_buckets(
                pool.vectors,
                vector,
                pool.uncertainty,
                pool.complexity,
                pool.keys,
                query.k,
                query.uncertainty_ratio,
                equal_count=query.bucketing is algo.Bucketing.EQUAL_COUNT,
                compact=pool.compact,
            )
            rows, similarity = selection.picks, selection.similarity[selection.picks]
            picks = [algo.Pick(bucket, bucket) for bucket in range(len(rows))]
        elif query.strategy in (Strategy.SIMILARITY_TOPK, Strategy.MMR):
            # Scored exactly: only the rows that can be among the most similar the strategy ranks.
            ranked = query.k if query.strategy == Strategy.SIMILARITY_TOPK else algo.mmr_fetch(query.k)
            rows, similarity = kernels.top_candidates(pool.vectors, vector, ranked, pool.compact)
            if query.strategy == Strategy.SIMILARITY_TOPK:
                picks = algo.similarity_top_k(similarity, pool.keys[rows], query.k)
            else:
                picks = algo.mmr(similarity, pool.vectors[rows], pool.keys[rows], query.k, query.mmr_lambda)
        else:
            seed = query.seed if query.seed is not None else int(np.random.default_rng().integers(2**63))
            rows = algo.random_rows(pool.keys, query.k, seed)
            similarity = pool.vectors[rows] @ vector
            picks = algo.similarity_top_k(similarity, pool.keys[rows], query.k)  # all k, least similar first
        chosen = [(pool.ids[rows[p.index]], float(similarity[p.index]), p.bucket) for p in picks]
        return await self._demonstrations(query.tenant, chosen, len(pool), mode)

    async def _demonstrations(
        self, tenant: str, chosen: list[tuple[str, float, int | None]], pool_size: int, mode: SearchMode
    ) -> Orchestration:
        ids = [eid for eid, _, _ in chosen]
        if self.store.quick_reads:
            found = self.store.get_many(tenant, ids)
        else:
            found = await asyncio.to_thread(self.store.get_many, tenant, ids)
        demonstrations = [
            Demonstration(found[eid], similarity, bucket) for eid, similarity, bucket in chosen if eid in found
        ]
        return Orchestration(demonstrations, pool_size, mode)

    async def get(self, tenant: str, eid: str) -> Experience | None:
        return await asyncio.to_thread(self.store.get, tenant, eid)

    async def delete(self, tenant: str, eid: str) -> bool:
        async with self._write_lock:
            deleted = await asyncio.to_thread(self.store.delete, tenant, eid)
            if deleted:
                self._mirror(tenant).remove(eid)
                if self.screen is not None:
                    self.screen.remove(tenant, eid)
                    self._count_quarantined(tenant)
                self.last_write[tenant] = time.time()
                POOL_SIZE.labels(tenant).set(self.mirrors[tenant].size)
        return deleted

    async def page(self, tenant: str, after_id: str | None, limit: int) -> list[Experience]:
        return await asyncio.to_thread(self.store.page, tenant, after_id, limit)

    async def stats(self, tenant: str) -> PoolStats:
        mirror = self.mirrors.get(tenant)
        indexed = await asyncio.to_thread(self.store.indexed_count, tenant)
        if mirror is None or mirror.size == 0:
            return PoolStats(0, indexed, 0.0, 0.0, self.last_write.get(tenant))
        view = mirror.view()
        return PoolStats(
            experience_count=len(view),
            indexed_count=indexed,
            mean_uncertainty=float(view.uncertainty.mean()),
            mean_complexity=float(view.complexity.mean()),
            last_write_time=self.last_write.get(tenant),
        )
