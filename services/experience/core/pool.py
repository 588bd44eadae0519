"""The experience pool: Record, Orchestrate and the bookkeeping around them, per tenant.

The store is the one source of truth. Each tenant's mirror is a cache of it: loaded on the
tenant's first use, evicted least recently used past the memory budget, and, over a shared store,
kept within the staleness bound of other replicas' writes by following the store's changes.
Selections run in a bounded worker pool, reading a tenant's mirror while that tenant's writers
wait; writes lock per tenant.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum

import aiorwlock
import numpy as np
from prometheus_client import Gauge

from kernels import dispatch as kernels
from kernels.bucketed_selection import BucketReason, explain_reference
from services.common.errors import BackendUnavailable, Overloaded
from services.experience.core import orchestrate as algo
from services.experience.core import sublinear
from services.experience.core.consistency import MarkerClock, Token
from services.experience.core.defence import BackdoorScreen, RecordVerdict, content_steps, evidence_for
from services.experience.core.experience import Experience, experience_id
from services.experience.core.mirror import PoolView, TenantMirror
from services.experience.core.partition import Partition
from services.experience.core.ports import Change, Embed, ExperienceStore, StoredPoint
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
    explain: bool = False  # RoSE, exact: say why each pick was chosen


@dataclass(frozen=True)
class Demonstration:
    experience: Experience
    similarity: float
    bucket: int | None
    reason: BucketReason | None = None  # with OrchestrateQuery.explain
    admission: RecordVerdict | None = None  # with OrchestrateQuery.explain, where the screen is on


@dataclass(frozen=True)
class Orchestration:
    demonstrations: list[Demonstration]
    pool_size: int
    search_mode: SearchMode
    #: How long ago this replica's view of the tenant last caught up with the store (0 where the
    #: store is single-node: every write goes through this replica).
    view_age_s: float = 0.0
    #: How long the call waited for the tenant's mirror to load (0 when it was resident).
    load_wait_s: float = 0.0


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
    writer: str = ""  # the caller's token's writer, with authentication on


@dataclass(frozen=True)
class PoolSettings:
    #: Pool size from which RoSE runs sublinear unless a request says otherwise.
    sublinear_threshold: int = 500_000
    #: Longest a replica's view of a loaded tenant may lag other replicas' writes.
    staleness_s: float = 1.0
    #: How far behind its last marker a catch-up re-reads: at least twice the worst clock skew
    #: between replicas, plus the longest write.
    catch_up_window_s: float = 5.0
    #: How long a shared store keeps tombstones; a replica that could not catch up for longer
    #: reloads its tenants in full.
    tombstone_retention_s: float = 600.0
    #: Resident bytes of all mirrors together; least recently used tenants go past it.
    mirror_budget_bytes: int = 4 << 30
    #: Selections running at once (threads), and waiting beyond those before RESOURCE_EXHAUSTED.
    selection_workers: int = 2
    selection_queue: int = 32
    #: Longest an Orchestrate without a deadline waits for its tenant's mirror to load.
    load_wait_s: float = 30.0


log = logging.getLogger(__name__)

POOL_SIZE = Gauge("rosemesh_experience_pool_size", "Experiences in each resident tenant's pool.", ["tenant"])
QUARANTINED = Gauge(
    "rosemesh_experience_quarantined", "Experiences held back from orchestration as suspected backdoors.", ["tenant"]
)
MIRROR_BYTES = Gauge("rosemesh_experience_mirror_bytes", "Resident bytes of each tenant's mirror.", ["tenant"])
VIEW_AGE = Gauge(
    "rosemesh_experience_view_age_seconds", "Time since the replica's view last caught up with the store."
)

#: The picks (id, similarity, bucket, why), the pool size.
_Selected = tuple[list[tuple[str, float, int | None, BucketReason | None]], int]

#: Pool rows sampled per tenant for the sublinear search; resampled as the pool grows.
SAMPLE_SIZE = 16_384
#: Texts per call to the embedding service (within its smallest configured limit, 64 in tests).
EMBED_CHUNK = 64
#: Changes read per page while catching up.
CHANGES_PAGE = 2048


@dataclass
class TenantState:
    """One tenant on this replica: its mirror (None until loaded) and what guards it."""

    name: str
    mirror: TenantMirror | None = None
    #: Selections read the mirror under ``rows.reader``; anything that changes it holds ``rows.writer``.
    rows: aiorwlock.RWLock = field(default_factory=aiorwlock.RWLock)
    #: Record and Delete of this tenant, one at a time on this replica.
    writes: asyncio.Lock = field(default_factory=asyncio.Lock)
    load: asyncio.Task[None] | None = None
    #: Changes that arrive while the mirror loads, applied once it has.
    pending: list[Change] = field(default_factory=list)
    #: Deletes applied, by marker, so that a catch-up that read the old version cannot revive it.
    tombstones: dict[str, int] = field(default_factory=dict)
    synced: float = 0.0  # monotonic time the view last caught up from
    last_used: float = 0.0
    last_write: float | None = None
    sample: tuple[int, PoolView] | None = None
    partitioning: asyncio.Task[None] | None = None
    quarantined: int = 0

    @property
    def busy(self) -> bool:
        return self.rows.reader.locked or self.rows.writer.locked or self.writes.locked()


class ExperiencePool:
    def __init__(
        self,
        store: ExperienceStore,
        embed: Embed,
        settings: PoolSettings | None = None,
        screen: BackdoorScreen | None = None,
        clock: MarkerClock | None = None,
    ) -> None:
        self.store = store
        self.embed = embed
        self.settings = settings or PoolSettings()
        #: The BadChain defence; None admits every record to orchestration.
        self.screen = screen
        self.clock = clock or MarkerClock()
        self.tenants: dict[str, TenantState] = {}
        self._selector = ThreadPoolExecutor(self.settings.selection_workers, thread_name_prefix="selection")
        self._selections = 0  # running or waiting
        self._high = 0  # the largest marker a catch-up has seen
        self._sync_lock = asyncio.Lock()
        self._last_sync = 0.0  # monotonic start of the last catch-up that succeeded
        self._follower: asyncio.Task[None] | None = None
        self._one_at_a_time: threading.Lock | None = None  # where the kernels cannot run concurrently

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Ready the selection kernel and check the store answers; follow other replicas' writes
        when the store is shared. No tenant loads until it is used."""
        await asyncio.to_thread(kernels.warm_up)
        if not kernels.parallel_calls_safe():
            log.warning("numba's workqueue threading layer takes one parallel kernel at a time: selections run one by one")
            self._one_at_a_time = threading.Lock()
        await asyncio.to_thread(self.store.count, "rosemesh-probe")
        self._high = self.clock.now()
        self._last_sync = time.monotonic()
        if self.store.shared:
            self._follower = asyncio.create_task(self._follow(), name="experience-follow")

    async def close(self) -> None:
        tasks = [self._follower] + [t.load for t in self.tenants.values()] + [t.partitioning for t in self.tenants.values()]
        for task in tasks:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
        self._selector.shutdown(wait=True, cancel_futures=True)

    # -- tenants on demand ------------------------------------------------------------------

    def _state(self, tenant: str) -> TenantState:
        state = self.tenants.get(tenant)
        if state is None:
            state = self.tenants[tenant] = TenantState(tenant)
        state.last_used = time.monotonic()
        return state

    async def _resident(self, tenant: str, wait_s: float | None) -> tuple[TenantState, float]:
        """The tenant with its mirror loaded, and how long this call waited for it."""
        state = self._state(tenant)
        if state.mirror is not None:
            return state, 0.0
        if state.load is None or state.load.done():
            state.load = asyncio.create_task(self._load(state), name=f"load-{tenant}")
        started = time.monotonic()
        budget = self.settings.load_wait_s if wait_s is None else max(0.0, wait_s)
        try:
            await asyncio.wait_for(asyncio.shield(state.load), budget)
        except TimeoutError:
            raise BackendUnavailable(
                f"tenant {tenant!r} is still loading into this replica's memory after {budget:.1f} s; retry shortly"
            ) from None
        return state, time.monotonic() - started

    async def _load(self, state: TenantState) -> None:
        try:
            await self._fill(state)
        except BaseException:
            self.tenants.pop(state.name, None)
            raise

    async def _fill(self, state: TenantState) -> None:
        dimension, name = self.store.dimension, state.name
        count = await asyncio.to_thread(self.store.count, name)
        capacity = max(8, count)
        needed = TenantMirror.row_bytes(dimension) * capacity
        if needed > self.settings.mirror_budget_bytes:
            raise Overloaded(
                f"tenant {name!r} holds {count} experiences, about {needed >> 20} MiB of mirror, more than this "
                f"replica's budget of {self.settings.mirror_budget_bytes >> 20} MiB (--mirror-budget-bytes)"
            )
        self._evict(needed, keep=name)
        state.pending = []
        state.synced = time.monotonic()  # the scan starts now: what it misses, the pending changes bring
        mirror = TenantMirror(dimension, capacity=capacity)
        started = time.monotonic()

        def scan() -> None:
            for point in self.store.scroll(name):
                self._apply(state, mirror, [Change(name, point.experience.id, point.marker, point)])
                state.last_write = max(state.last_write or 0.0, point.experience.update_time)
            mirror.catch_up()

        await asyncio.to_thread(scan)
        while state.pending:  # what arrived during the scan; more may arrive during each catch-up
            arrived, state.pending = state.pending, []
            self._apply(state, mirror, arrived)
            await asyncio.to_thread(mirror.catch_up)
        mirror.catch_up()  # nothing arrived since the last check: publish with no await between
        state.mirror = mirror
        self._after_writes(state)
        log.info("loaded tenant %s: %d experiences in %.1f s", name, mirror.size, time.monotonic() - started)
        self._evict(0, keep=name)

    def _evict(self, needed: int, keep: str) -> None:
        """Drop the least recently used idle mirrors until ``needed`` more bytes fit the budget."""
        resident = sorted(
            (s for s in self.tenants.values() if s.mirror is not None and s.name != keep), key=lambda s: s.last_used
        )
        total = self.resident_bytes()
        for state in resident:
            if total + needed <= self.settings.mirror_budget_bytes:
                return
            if state.busy or (state.partitioning is not None and not state.partitioning.done()):
                continue
            assert state.mirror is not None
            total -= state.mirror.nbytes
            self._forget(state.name)
            log.info("evicted tenant %s from memory (mirror budget)", state.name)

    def _forget(self, tenant: str) -> None:
        self.tenants.pop(tenant, None)
        if self.screen is not None:
            self.screen.forget(tenant)
        for gauge in (POOL_SIZE, QUARANTINED, MIRROR_BYTES):
            try:
                gauge.remove(tenant)
            except KeyError:
                pass

    def quarantined(self, tenant: str) -> set[str]:
        """Experiences of a resident tenant held back from orchestration as suspected backdoors."""
        return self.screen.quarantined(tenant) if self.screen is not None else set()

    async def screen_report(self, tenant: str, deadline_s: float | None = None) -> list[tuple[Experience, RecordVerdict]]:
        """The tenant's records that orchestration does not hand out, with why and who wrote them."""
        if self.screen is None:
            return []
        await self._resident(tenant, deadline_s)
        held = sorted(self.screen.excluded(tenant))
        found = await self._fetch(tenant, held)
        report = []
        for eid in held:
            verdict = self.screen.verdict(tenant, eid)
            if eid in found and verdict is not None:
                report.append((found[eid], verdict))
        return report

    def resident_bytes(self) -> int:
        return sum(s.mirror.nbytes for s in self.tenants.values() if s.mirror is not None)

    # -- applying changes -------------------------------------------------------------------

    def _apply(self, state: TenantState, mirror: TenantMirror, changes: Sequence[Change]) -> bool:
        """Apply changes idempotently, the larger marker winning; whether any took effect."""
        changed = False
        for change in changes:
            eid = change.experience_id
            current = mirror.marker_of(eid)
            if current is None:
                current = state.tombstones.get(eid, -1)
            if change.marker <= current:
                continue
            changed = True
            if change.point is None:
                mirror.remove(eid)
                state.tombstones[eid] = change.marker
                if self.screen is not None:
                    self.screen.remove(state.name, eid)
            else:
                e = change.point.experience
                mirror.upsert(eid, change.point.vector, e.uncertainty, e.complexity, change.marker)
                state.tombstones.pop(eid, None)
                if self.screen is not None:
                    self.screen.add(state.name, eid, e.question, e.reasoning, e.answer, change.point.vector, e.screen, e.writer)
        return changed

    def _after_writes(self, state: TenantState) -> None:
        """Quarantine, metrics and a partition once the mirror changed (it is caught up)."""
        mirror = state.mirror
        assert mirror is not None
        quarantined = self.screen.quarantined(state.name) if self.screen is not None else set()
        mirror.set_excluded(self.screen.excluded(state.name) if self.screen is not None else set())
        if len(quarantined) > state.quarantined:
            log.warning("suspected backdoor experiences quarantined", extra={"tenant": state.name, "count": len(quarantined)})
        state.quarantined = len(quarantined)
        QUARANTINED.labels(state.name).set(len(quarantined))
        POOL_SIZE.labels(state.name).set(mirror.size)
        MIRROR_BYTES.labels(state.name).set(mirror.nbytes)
        if mirror.size >= self.settings.sublinear_threshold:
            self._partition_soon(state)

    async def _write(self, state: TenantState, changes: list[Change]) -> None:
        """This replica's own acknowledged writes, into the mirror if it is resident or loading."""
        if state.mirror is None:
            if state.load is not None and not state.load.done():
                state.pending.extend(changes)
            return
        async with state.rows.writer:
            if state.mirror is None:  # evicted meanwhile
                return
            self._apply(state, state.mirror, changes)
            state.mirror.catch_up()  # the write pays for its codes (22 µs a row), not the next read
            self._after_writes(state)
        self._evict(0, keep=state.name)

    # -- following other replicas -----------------------------------------------------------

    async def _follow(self) -> None:
        interval = self.settings.staleness_s / 4
        last_purge = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.catch_up()
                if time.monotonic() - last_purge > self.settings.tombstone_retention_s / 4:
                    before = self.clock.now() - int(self.settings.tombstone_retention_s * 1e6)
                    purged = await asyncio.to_thread(self.store.purge_tombstones, before)
                    last_purge = time.monotonic()
                    if purged:
                        log.info("purged %d tombstones", purged)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is down or slow: the view ages, and says so
                log.warning("could not catch up with the store: %s", exc)
                if time.monotonic() - self._last_sync > self.settings.tombstone_retention_s:
                    for tenant in [s.name for s in self.tenants.values() if s.mirror is not None and not s.busy]:
                        self._forget(tenant)  # deletes may be purged already: reload in full on next use
            VIEW_AGE.set(time.monotonic() - self._last_sync)

    async def catch_up(self, since: int | None = None, after: float | None = None) -> None:
        """Apply every change of the resident and loading tenants since the last catch-up's
        window (or ``since``, if earlier). With ``after`` (monotonic), a catch-up that started
        after that moment is enough, and one runs only if none has."""
        async with self._sync_lock:
            if after is not None and self._last_sync > after and since is None:
                return
            started = time.monotonic()
            tenants = {s.name: s for s in self.tenants.values() if s.mirror is not None or s.load is not None}
            floor = self._high - int(self.settings.catch_up_window_s * 1e6)
            cursor = floor if since is None else min(floor, since)
            changes = await self._changes(list(tenants), cursor)
            by_tenant: dict[str, list[Change]] = {}
            for change in changes:
                by_tenant.setdefault(change.tenant, []).append(change)
                self._high = max(self._high, change.marker)
            forget_before = self._high - 2 * int(self.settings.catch_up_window_s * 1e6)
            for name, state in tenants.items():
                if self.tenants.get(name) is not state:
                    continue
                found = by_tenant.get(name, [])
                if state.mirror is None:
                    state.pending.extend(found)
                    continue
                if found:
                    async with state.rows.writer:
                        if state.mirror is not None and self._apply(state, state.mirror, found):
                            state.mirror.catch_up()
                            self._after_writes(state)
                state.synced = started
                state.tombstones = {eid: m for eid, m in state.tombstones.items() if m >= forget_before}
            self._last_sync = started

    async def _changes(self, tenants: list[str], since: int) -> list[Change]:
        if not tenants:
            return []
        found: list[Change] = []
        seen: set[tuple[str, int]] = set()
        page_size = CHANGES_PAGE
        while True:
            page = await asyncio.to_thread(self.store.changes, tenants, since, page_size)
            fresh = [c for c in page if (c.experience_id, c.marker) not in seen]
            found.extend(fresh)
            if len(page) < page_size:
                return found
            last = page[-1].marker
            if page[0].marker == last:  # a whole page on one marker: read more at once
                page_size *= 2
            since = last  # inclusive: the changes on it are skipped by ``seen``
            seen = {(c.experience_id, c.marker) for c in page if c.marker == last}

    async def _includes(self, state: TenantState, token: Token, deadline_s: float | None) -> None:
        """Return once this replica's view of the tenant includes the token's write."""
        if not self.store.shared or state.mirror is None:
            return  # single-node: every write went through here; a fresh load reads the store now
        mirror = state.mirror
        if token.experience_ids and all(
            max(_or_none(mirror.marker_of(eid)), state.tombstones.get(eid, -1)) >= token.marker
            for eid in token.experience_ids
        ):
            return
        arrived = time.monotonic()
        try:
            await asyncio.wait_for(self.catch_up(since=token.marker, after=arrived), deadline_s)
        except (TimeoutError, BackendUnavailable) as exc:
            raise BackendUnavailable(
                f"this replica could not catch up with tenant {state.name!r} to the token's write "
                f"in time ({exc or 'deadline'}); retry"
            ) from exc

    # -- writes -----------------------------------------------------------------------------

    async def record_many(self, inputs: Sequence[RecordInput]) -> tuple[list[tuple[Experience, bool]], list[Token]]:
        """Record several answered questions; durable and visible to Orchestrate on return.
        A question repeated within ``inputs`` is recorded once per repeat, the last one winning.
        Returns each result, and one consistency token per tenant written."""
        if not inputs:
            return [], []
        summaries = [summarise(i.paths) for i in inputs]
        steps = [content_steps(i.question, p.reasoning) if self.screen is not None else [] for i, p in zip(inputs, summaries, strict=True)]
        texts = [i.question for i in inputs] + [step for found in steps for step in found]
        vectors = np.concatenate([await self.embed(texts[at : at + EMBED_CHUNK]) for at in range(0, len(texts), EMBED_CHUNK)])
        now = round(time.time(), 3)  # millisecond times survive the payload round trip exactly
        evidence = [None] * len(inputs)
        if self.screen is not None:
            start = len(inputs)
            for index, found in enumerate(steps):
                summary = summaries[index]
                step_vectors = vectors[start : start + len(found)]
                evidence[index] = await asyncio.to_thread(evidence_for, inputs[index].question, summary.reasoning, summary.answer, step_vectors)
                start += len(found)
        ids = [experience_id(i.tenant, i.question) for i in inputs]
        tokens: list[Token] = []
        by_tenant: dict[str, list[int]] = {}
        for index, record in enumerate(inputs):
            by_tenant.setdefault(record.tenant, []).append(index)
        outcome: dict[int, tuple[Experience, bool]] = {}
        for tenant, indices in by_tenant.items():
            state = self._state(tenant)
            async with state.writes:
                tenant_ids = [ids[i] for i in indices]
                versions = await asyncio.to_thread(self.store.versions, tenant, tenant_ids)
                points: dict[str, StoredPoint] = {}
                for i in indices:
                    eid = ids[i]
                    held = versions.get(eid)
                    before = points[eid].experience if eid in points else (held.experience if held else None)
                    experience = Experience(
                        **asdict(summaries[i]),
                        id=eid,
                        tenant=tenant,
                        question=inputs[i].question,
                        create_time=before.create_time if before else now,
                        update_time=now,
                        writer=inputs[i].writer,
                        screen=evidence[i],
                    )
                    marker = self.clock.take(after=held.marker if held else 0)
                    points[eid] = StoredPoint(experience, vectors[i], marker)
                    outcome[i] = (experience, before is None)
                await asyncio.to_thread(self.store.upsert, list(points.values()))
                state.last_write = now
                await self._write(state, [Change(tenant, eid, p.marker, p) for eid, p in points.items()])
            tokens.append(Token.of(tenant, [p.marker for p in points.values()], list(points)))
        return [outcome[i] for i in range(len(inputs))], tokens

    async def delete(self, tenant: str, eid: str) -> tuple[bool, Token]:
        state = self._state(tenant)
        async with state.writes:
            versions = await asyncio.to_thread(self.store.versions, tenant, [eid])
            held = versions.get(eid)
            marker = self.clock.take(after=held.marker if held else 0)
            deleted = await asyncio.to_thread(self.store.delete, tenant, eid, marker)
            if deleted:
                state.last_write = time.time()
                await self._write(state, [Change(tenant, eid, marker, None)])
        return deleted, Token.of(tenant, [marker], [eid])

    # -- orchestration ----------------------------------------------------------------------

    def resolve_mode(self, query: OrchestrateQuery, pool_size: int) -> SearchMode:
        """Sublinear serves RoSE only; the baselines are exact (they rank from the int16 codes)."""
        if query.strategy != Strategy.ROSE:
            return SearchMode.EXACT
        if query.search_mode == SearchMode.AUTO:
            return SearchMode.SUBLINEAR if pool_size >= self.settings.sublinear_threshold else SearchMode.EXACT
        return query.search_mode

    def _partition_soon(self, state: TenantState) -> None:
        mirror = state.mirror
        if mirror is None or not mirror.partition_due() or mirror.pending is not None:
            return
        if state.partitioning is None or state.partitioning.done():
            state.partitioning = asyncio.create_task(self._partition(state), name=f"partition-{state.name}")

    async def _partition(self, state: TenantState) -> None:
        """Train a partition off the tenant's lock, on a copy of the training rows; place the rows
        a block at a time while writes wait only for that block, and adopt it. Writes made
        meanwhile keep the pending partition up as they do the live one."""
        mirror = state.mirror
        assert mirror is not None
        started = time.monotonic()
        async with state.rows.reader:
            size, training = mirror.size, mirror.training_rows()
        partition = await asyncio.to_thread(Partition.train, training, size)
        del training
        async with state.rows.writer:
            mirror.pending = partition
        placed = 0
        while True:
            async with state.rows.reader:
                if placed >= mirror.size:
                    break
                placed = await asyncio.to_thread(mirror.place_pending, placed)
        async with state.rows.writer:
            mirror.adopt_pending()
        log.info("partitioned tenant %s: %d experiences in %.1f s", state.name, mirror.size, time.monotonic() - started)

    def _sample(self, state: TenantState, mirror: TenantMirror) -> PoolView:
        drawn = state.sample
        if drawn is None or abs(mirror.size - drawn[0]) > 0.05 * drawn[0]:
            drawn = (mirror.size, mirror.sample(SAMPLE_SIZE, np.random.default_rng(mirror.size)))
            state.sample = drawn
        return drawn[1]

    async def orchestrate(
        self, query: OrchestrateQuery, token: Token | None = None, deadline_s: float | None = None
    ) -> Orchestration:
        """Pick demonstrations; with ``token``, from a view that includes that write. Within
        ``deadline_s`` (the call's time left) where given."""
        started = time.monotonic()
        (vector,) = await self.embed([query.question])
        vector = vector.astype(np.float32)
        state, waited = await self._resident(query.tenant, self._left(deadline_s, started))
        if token is not None:
            await self._includes(state, token, self._left(deadline_s, started))
        for attempt in range(2):
            mode, chosen, pool_size = await self._select(state, query, vector)
            found = await self._fetch(query.tenant, [eid for eid, *_ in chosen])
            if all(eid in found for eid, *_ in chosen) or not self.store.shared or attempt:
                break
            # A pick is gone from the store: another replica deleted it since the last catch-up.
            await self.catch_up(after=time.monotonic())
        admission = (lambda eid: self.screen.verdict(query.tenant, eid)) if query.explain and self.screen else (lambda eid: None)
        demonstrations = [Demonstration(found[eid], s, b, why, admission(eid)) for eid, s, b, why in chosen if eid in found]
        age = time.monotonic() - state.synced if self.store.shared else 0.0
        return Orchestration(demonstrations, pool_size, mode, view_age_s=age, load_wait_s=waited)

    @staticmethod
    def _left(deadline_s: float | None, started: float) -> float | None:
        return None if deadline_s is None else deadline_s - (time.monotonic() - started)

    async def _fetch(self, tenant: str, ids: list[str]) -> dict[str, Experience]:
        if self.store.quick_reads:
            return self.store.get_many(tenant, ids)
        return await asyncio.to_thread(self.store.get_many, tenant, ids)

    async def _select(
        self, state: TenantState, query: OrchestrateQuery, vector: np.ndarray
    ) -> tuple[SearchMode, list[tuple[str, float, int | None, BucketReason | None]], int]:
        """(what ran, the picks as (id, similarity, bucket, why), the pool size), in a worker thread."""
        limit = self.settings.selection_workers + self.settings.selection_queue
        if self._selections >= limit:
            raise Overloaded(f"{self._selections} selections are running or waiting on this replica; retry with backoff")
        self._selections += 1
        try:
            async with state.rows.reader:
                mirror = state.mirror
                if mirror is None or mirror.size == 0:
                    return self.resolve_mode(query, 0), [], 0
                mode = self.resolve_mode(query, mirror.size)
                if mode == SearchMode.SUBLINEAR and mirror.partition is None:
                    self._partition_soon(state)
                    mode = SearchMode.EXACT  # until the partition is ready; the response says so
                if mode == SearchMode.SUBLINEAR:
                    excluded = self.screen.excluded(state.name) if self.screen is not None else set()
                    sample = self._sample(state, mirror).without(excluded)
                    work = lambda: _select_sublinear(mirror, vector, sample, query)  # noqa: E731
                else:
                    view = mirror.view()
                    work = lambda: _select_exact(view, vector, query)  # noqa: E731
                loop = asyncio.get_running_loop()
                chosen, pool_size = await loop.run_in_executor(self._selector, self._guarded, work)
                return mode, chosen, pool_size
        finally:
            self._selections -= 1

    def _guarded(self, work: Callable[[], _Selected]) -> _Selected:
        if self._one_at_a_time is None:
            return work()
        with self._one_at_a_time:
            return work()

    # -- reads ------------------------------------------------------------------------------

    async def get(self, tenant: str, eid: str) -> Experience | None:
        return await asyncio.to_thread(self.store.get, tenant, eid)

    async def page(self, tenant: str, after_id: str | None, limit: int) -> list[Experience]:
        return await asyncio.to_thread(self.store.page, tenant, after_id, limit)

    async def stats(self, tenant: str, deadline_s: float | None = None) -> PoolStats:
        state, _ = await self._resident(tenant, deadline_s)
        indexed = await asyncio.to_thread(self.store.indexed_count, tenant)
        async with state.rows.reader:
            mirror = state.mirror
            if mirror is None or mirror.size == 0:
                return PoolStats(0, indexed, 0.0, 0.0, state.last_write)
            n = mirror.size
            return PoolStats(
                experience_count=n,
                indexed_count=indexed,
                mean_uncertainty=float(mirror.uncertainty[:n].mean()),
                mean_complexity=float(mirror.complexity[:n].mean()),
                last_write_time=state.last_write,
            )


def _or_none(marker: int | None) -> int:
    return -1 if marker is None else marker


def _select_exact(view: PoolView, vector: np.ndarray, query: OrchestrateQuery) -> _Selected:
    """One exact selection over a caught-up view; runs in a worker thread. Quarantined rows are
    masked inside the kernels' passes."""
    excluded = view.excluded
    if view.selectable == 0:
        return [], 0
    reasons: dict[int, BucketReason] = {}  # RoSE with explain only
    if query.strategy == Strategy.ROSE:
        selection = kernels.select_buckets(
            view.vectors,
            vector,
            view.uncertainty,
            view.complexity,
            view.keys,
            query.k,
            query.uncertainty_ratio,
            equal_count=query.bucketing is algo.Bucketing.EQUAL_COUNT,
            compact=view.compact,
            excluded=excluded,
        )
        rows, similarity = selection.picks, selection.similarity[selection.picks]
        picks = [algo.Pick(bucket, bucket) for bucket in range(len(rows))]
        if query.explain:
            reasons = _reasons(view, vector, query)
    elif query.strategy in (Strategy.SIMILARITY_TOPK, Strategy.MMR):
        # Scored exactly: only the rows that can be among the most similar the strategy ranks.
        ranked = query.k if query.strategy == Strategy.SIMILARITY_TOPK else algo.mmr_fetch(query.k)
        rows, similarity = kernels.top_candidates(view.vectors, vector, ranked, view.compact, excluded)
        if query.strategy == Strategy.SIMILARITY_TOPK:
            picks = algo.similarity_top_k(similarity, view.keys[rows], query.k)
        else:
            picks = algo.mmr(similarity, view.vectors[rows], view.keys[rows], query.k, query.mmr_lambda)
    else:
        seed = query.seed if query.seed is not None else int(np.random.default_rng().integers(2**63))
        rows = algo.random_rows(view.keys, query.k, seed, excluded)
        similarity = view.vectors[rows] @ vector
        picks = algo.similarity_top_k(similarity, view.keys[rows], query.k)  # all k, least similar first
    chosen = [(view.ids[rows[p.index]], float(similarity[p.index]), p.bucket, reasons.get(int(rows[p.index]))) for p in picks]
    return chosen, view.selectable


def _reasons(view: PoolView, vector: np.ndarray, query: OrchestrateQuery) -> dict[int, BucketReason]:
    """Why each pick won its bucket, from the selection's reference (which the fast paths match
    pick for pick), keyed by pool row; a sort of the selectable rows."""
    rows = np.arange(len(view.ids)) if view.excluded is None else np.flatnonzero(~view.excluded)
    similarity = (view.vectors[rows] @ vector).astype(np.float32)
    reasons = explain_reference(
        similarity, view.uncertainty[rows], view.complexity[rows], view.keys[rows], query.k, query.uncertainty_ratio,
        equal_count=query.bucketing is algo.Bucketing.EQUAL_COUNT,
    )  # fmt: skip
    return {int(rows[r.pick]): r for r in reasons}


def _select_sublinear(
    mirror: TenantMirror, vector: np.ndarray, sample: PoolView, query: OrchestrateQuery
) -> _Selected:
    """The sublinear RoSE over a partitioned mirror; runs in a worker thread."""
    view = mirror.view()
    excluded_rows = np.flatnonzero(view.excluded) if view.excluded is not None else None
    picks = sublinear.select(mirror, vector, sample, view.selectable, query.k, query.uncertainty_ratio, excluded_rows)
    return [(p.experience_id, p.similarity, p.bucket, None) for p in picks], view.selectable
