"""The experience service through real gRPC, on the embedding service and the embedded Qdrant engine."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from rosemesh.experience.v1 import experience_pb2 as pb

from services.common.net import free_port
from services.embedding.client import EmbeddingClient
from services.experience.client import ExperienceClient
from services.offline.datasets import commonsense_qa
from services.supervisor import RunningService, service_process, wait_until_serving
from tests.helpers import scrape


def sampled_paths(rng: random.Random, correct: str, m: int = 5) -> list[tuple[str, str]]:
    """m reasoning paths like a sampled LLM's: mostly the right letter, varying length."""
    paths = []
    for _ in range(m):
        answer = correct if rng.random() < 0.7 else rng.choice("ABCDE")
        steps = [f"Step {i + 1}: consider option {rng.choice('ABCDE')}." for i in range(rng.randint(1, 6))]
        paths.append(("\n".join([*steps, f"So the answer is {answer}."]), answer))
    return paths


def experience_flags(embedding: RunningService, data_dir: Path) -> list[str]:
    return ["--embedding-target", embedding.address, "--data-dir", str(data_dir), "--grace-period-s", "10"]


@pytest.fixture(scope="module")
def experience_service(embedding_service: RunningService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with service_process("experience", experience_flags(embedding_service, tmp_path_factory.mktemp("pool"))) as s:
        yield s


@pytest.fixture()
async def tenant_client(experience_service: RunningService, request: pytest.FixtureRequest) -> AsyncIterator[ExperienceClient]:
    tenant = f"t-{request.node.name[:40].lower().replace('_', '-')}"
    tenant = "".join(c for c in tenant if c.isalnum() or c in "-_")
    async with ExperienceClient(experience_service.address, tenant, timeout_s=60) as client:
        yield client


async def record_questions(client: ExperienceClient, count: int, seed: int = 0) -> list[pb.RecordResponse]:
    rng = random.Random(seed)
    return [await client.record(q.prompt(), sampled_paths(rng, q.answer)) for q in commonsense_qa(count)]


async def test_record_then_orchestrate(tenant_client: ExperienceClient, embedding_client: EmbeddingClient) -> None:
    recorded = await record_questions(tenant_client, 40)
    assert all(r.created for r in recorded)
    first = recorded[0].experience
    assert first.path_count == 5 and first.reasoning.endswith(f"So the answer is {first.answer}.")

    question = commonsense_qa(60)[50].prompt()
    result = await tenant_client.orchestrate(question, k=7)
    assert result.pool_size == 40 and result.strategy == pb.STRATEGY_ROSE
    assert result.embedding_model == "all-MiniLM-L6-v2" and result.search_mode == pb.SEARCH_MODE_EXACT
    demonstrations = list(result.demonstrations)
    assert len(demonstrations) == 7
    assert [d.bucket_index for d in demonstrations] == list(range(7))
    similarities = [d.similarity for d in demonstrations]
    assert similarities == sorted(similarities)
    # the reported similarity is the cosine of the two questions' embeddings
    vectors = (await embedding_client.embed([question, demonstrations[-1].experience.question])).vectors
    assert float(vectors[0] @ vectors[1]) == pytest.approx(similarities[-1], abs=1e-4)

    # The first sublinear call runs exact, and says so, while the partition trains off the loop.
    first = await tenant_client.orchestrate(question, k=7, search_mode=pb.SEARCH_MODE_SUBLINEAR)
    assert first.search_mode == pb.SEARCH_MODE_EXACT and len(first.demonstrations) == 7
    for _ in range(100):
        sublinear = await tenant_client.orchestrate(question, k=7, search_mode=pb.SEARCH_MODE_SUBLINEAR)
        if sublinear.search_mode == pb.SEARCH_MODE_SUBLINEAR:
            break
        await asyncio.sleep(0.05)
    assert sublinear.search_mode == pb.SEARCH_MODE_SUBLINEAR and len(sublinear.demonstrations) == 7
    assert [d.bucket_index for d in sublinear.demonstrations] == list(range(7))

    top = await tenant_client.orchestrate(question, k=7, strategy=pb.STRATEGY_SIMILARITY_TOPK)
    assert top.demonstrations[-1].similarity == pytest.approx(max(d.similarity for d in top.demonstrations))
    assert top.demonstrations[-1].similarity >= similarities[-1] - 1e-6
    for strategy in (pb.STRATEGY_MMR, pb.STRATEGY_RANDOM):
        other = await tenant_client.orchestrate(question, k=7, strategy=strategy, seed=3)
        assert len(other.demonstrations) == 7 and other.strategy == strategy
        assert len({d.experience.id for d in other.demonstrations}) == 7


async def test_orchestrate_says_why_each_demonstration_was_chosen(tenant_client: ExperienceClient) -> None:
    await record_questions(tenant_client, 40, seed=1)
    question = commonsense_qa(60)[55].prompt()
    for bucketing in (pb.BUCKETING_EQUAL_WIDTH, pb.BUCKETING_EQUAL_COUNT):
        plain = await tenant_client.orchestrate(question, k=6, bucketing=bucketing)
        explained = await tenant_client.orchestrate(question, k=6, bucketing=bucketing, explain=True)
        assert [d.experience.id for d in explained.demonstrations] == [d.experience.id for d in plain.demonstrations]
        assert not any(d.HasField("reason") for d in plain.demonstrations)
        previous_high = -2.0
        for d in explained.demonstrations:
            why = d.reason
            assert why.bucket_similarity_min - 1e-6 <= d.similarity <= why.bucket_similarity_max + 1e-6
            assert why.bucket_similarity_min >= previous_high - 1e-6  # buckets in order, apart
            previous_high = why.bucket_similarity_max
            assert why.bucket_min_uncertainty <= why.uncertainty <= why.uncertainty_bound
            assert why.uncertainty == pytest.approx(d.experience.uncertainty)
            assert why.uncertainty_bound == pytest.approx(1.2 * why.bucket_min_uncertainty, abs=1e-3)
            assert 1 <= why.kept <= why.bucket_size and 1 <= why.complexity_rank <= why.bucket_size
        assert sum(d.reason.bucket_size for d in explained.demonstrations) == 40
    other = await tenant_client.orchestrate(question, k=6, strategy=pb.STRATEGY_SIMILARITY_TOPK, explain=True)
    assert not any(d.HasField("reason") for d in other.demonstrations)


async def test_sublinear_keeps_up_with_writes_after_partitioning(tenant_client: ExperienceClient) -> None:
    """A pool this small is probed whole, so sublinear RoSE must pick exactly what exact RoSE
    picks, before and after the writes that follow the partition's training."""
    question = "Where do you keep milk cold?\nA. fridge\nB. oven"
    recorded = await record_questions(tenant_client, 40)

    async def both() -> tuple[list[str], list[str]]:
        exact = await tenant_client.orchestrate(question, k=6, search_mode=pb.SEARCH_MODE_EXACT)
        sublinear = await tenant_client.orchestrate(question, k=6, search_mode=pb.SEARCH_MODE_SUBLINEAR)
        return [d.experience.id for d in exact.demonstrations], [d.experience.id for d in sublinear.demonstrations]

    exact, sublinear = await both()  # the first sublinear call trains the partition
    assert len(exact) == 6 and sublinear == exact
    rng = random.Random(5)
    added = [await tenant_client.record(f"{question} Variant {i}.", sampled_paths(rng, "A")) for i in range(5)]
    for response in recorded[:10]:
        assert await tenant_client.delete(response.experience.id)
    exact, sublinear = await both()
    assert sublinear == exact
    assert {a.experience.id for a in added} & set(sublinear)  # the new, most similar rows are reachable
    assert not {r.experience.id for r in recorded[:10]} & set(sublinear)


async def test_read_your_writes_and_rerecord_updates(tenant_client: ExperienceClient) -> None:
    question = "Where would you put a plate after washing it?\nA. cupboard\nB. table"
    first = await tenant_client.record(question, [("Plates dry\nthen go away", "A")])
    again = await tenant_client.record("  where would you put a PLATE after washing it?\nA. cupboard\nB. table ", [
        ("It is clean\nso store it\nin the cupboard", "A"),
        ("Maybe the table", "B"),
    ])
    assert first.created and not again.created
    assert again.experience.id == first.experience.id
    assert again.experience.create_time == first.experience.create_time
    assert again.experience.path_count == 2 and again.experience.complexity == 3
    result = await tenant_client.orchestrate(question, k=3)
    assert [d.experience.id for d in result.demonstrations] == [first.experience.id]
    stats = await tenant_client.stats()
    assert stats.experience_count == 1 and stats.storage_backend == "qdrant-edge" and stats.dimension == 384


async def test_pool_size_per_tenant_is_exported(
    tenant_client: ExperienceClient, experience_service: RunningService
) -> None:
    await record_questions(tenant_client, 4, seed=3)
    metrics = scrape(experience_service)
    assert tenant_client.tenant not in {s.labels["tenant"] for s in metrics["rosemesh_experience_pool_size"]}
    await tenant_client.orchestrate("Which one?", k=2)  # the tenant's first use loads it
    metrics = scrape(experience_service)
    sizes = {s.labels["tenant"]: s.value for s in metrics["rosemesh_experience_pool_size"]}
    resident = {s.labels["tenant"]: s.value for s in metrics["rosemesh_experience_mirror_bytes"]}
    assert sizes[tenant_client.tenant] == 4 and resident[tenant_client.tenant] > 4 * 384 * 6


async def test_get_list_paging_delete(tenant_client: ExperienceClient) -> None:
    recorded = await record_questions(tenant_client, 23, seed=1)
    ids = sorted(r.experience.id for r in recorded)
    seen, token = [], ""
    while True:
        page = await tenant_client.list(page_size=10, page_token=token)
        seen += [e.id for e in page.experiences]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    got = await tenant_client.get(question=commonsense_qa(1)[0].prompt())
    assert got.id == recorded[0].experience.id
    assert await tenant_client.delete(ids[0]) is True
    assert await tenant_client.delete(ids[0]) is False
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await tenant_client.get(experience_id=ids[0])
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await tenant_client.stats()).experience_count == 22


async def test_bulk_record_stream(tenant_client: ExperienceClient) -> None:
    rng = random.Random(5)
    questions = commonsense_qa(130)[30:130]

    async def items():  # type: ignore[no-untyped-def]
        for q in questions:
            yield q.prompt(), sampled_paths(rng, q.answer)
        yield questions[0].prompt(), sampled_paths(rng, questions[0].answer)  # a repeat updates

    result = await tenant_client.record_stream(items())
    assert (result.created_count, result.updated_count) == (100, 1)
    assert (await tenant_client.stats()).experience_count == 100


async def test_a_bad_message_ends_the_stream_and_keeps_what_came_before(tenant_client: ExperienceClient) -> None:
    async def items():  # type: ignore[no-untyped-def]
        for i in range(3):
            yield f"Good question {i}?", [("reason", "A")]
        yield "Bad question?", []

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tenant_client.record_stream(items())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation(caught.value)[0] == "stream[3].record.paths"
    assert (await tenant_client.stats()).experience_count == 3


async def test_tenants_never_see_each_other(experience_service: RunningService) -> None:
    async with (
        ExperienceClient(experience_service.address, "tenant-a") as a,
        ExperienceClient(experience_service.address, "tenant-b") as b,
    ):
        secret = await a.record("What is tenant A's secret question?", [("Only A\nknows", "A")])
        await b.record("Something B asked", [("B's reasoning", "B")])
        eid = secret.experience.id
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await b.get(experience_id=eid)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        orchestrated = await b.orchestrate("What is tenant A's secret question?", k=5)
        assert [d.experience.tenant for d in orchestrated.demonstrations] == ["tenant-b"]
        assert all(e.tenant == "tenant-b" for e in (await b.list()).experiences)
        assert await b.delete(eid) is False
        assert (await a.get(experience_id=eid)).id == eid
        assert (await b.stats()).experience_count == 1


def violation(error: grpc.aio.AioRpcError) -> tuple[str, str]:
    status = rpc_status.from_call(error)
    assert status is not None
    details = error_details_pb2.BadRequest()
    status.details[0].Unpack(details)
    return details.field_violations[0].field, details.field_violations[0].description


BAD = {
    "empty question": ("record", {"question": " ", "paths": [("r", "a")]}, "question", "must not be empty"),
    "no paths": ("record", {"question": "q?", "paths": []}, "paths", "at least one"),
    "empty answer": ("record", {"question": "q?", "paths": [("r", "")]}, "paths[0].answer", "must not be empty"),
    "oversized reasoning": ("record", {"question": "q?", "paths": [("x" * 40_000, "a")]}, "paths[0].reasoning", "exceed"),
    "k zero": ("orchestrate", {"question": "q?", "k": 0}, "k", "between 1 and 64"),
    "k over the limit": ("orchestrate", {"question": "q?", "k": 65}, "k", "between 1 and 64"),
    "lambda below 1": ("orchestrate", {"question": "q?", "k": 3, "uncertainty_ratio": 0.5}, "uncertainty_ratio", "at least 1"),
    "unknown strategy": ("orchestrate", {"question": "q?", "k": 3, "strategy": 42}, "strategy", "unknown strategy"),
}


@pytest.mark.parametrize("case", list(BAD))
async def test_bad_input_is_rejected_with_the_field_named(experience_service: RunningService, case: str) -> None:
    method, args, field, phrase = BAD[case]
    async with ExperienceClient(experience_service.address, "bad-input", max_attempts=1) as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(client, method)(**args)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violation(caught.value)[0] == field and phrase in violation(caught.value)[1]
        assert (await client.stats()).experience_count == 0


async def test_tenant_format_is_checked(experience_service: RunningService) -> None:
    async with ExperienceClient(experience_service.address, "Bad Tenant!", max_attempts=1) as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.stats()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation(caught.value)[0] == "tenant"


async def test_restart_keeps_the_pool(embedding_service: RunningService, tmp_path: Path) -> None:
    flags = experience_flags(embedding_service, tmp_path)
    with service_process("experience", flags) as first:
        async with ExperienceClient(first.address, "durable") as client:
            recorded = await record_questions(client, 12, seed=2)
            before = await client.orchestrate("Where do people keep books?", k=4)
    with service_process("experience", flags) as second:
        async with ExperienceClient(second.address, "durable") as client:
            assert (await client.stats()).experience_count == 12
            stored = await client.get(experience_id=recorded[5].experience.id)
            expected = MessageToDict(recorded[5].experience)
            # the engine's payload round-trip may move a double by one ulp
            assert MessageToDict(stored) == expected | {"uncertainty": pytest.approx(expected["uncertainty"], rel=1e-12)}
            after = await client.orchestrate("Where do people keep books?", k=4)
    assert [d.experience.id for d in after.demonstrations] == [d.experience.id for d in before.demonstrations]


async def test_kill_9_during_a_write_burst_loses_no_acknowledged_write(
    embedding_service: RunningService, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    flags = [*experience_flags(embedding_service, tmp_path), "--port", str(port), "--metrics-port", str(metrics_port)]
    server = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "experience", *flags])
    address = f"127.0.0.1:{port}"
    acknowledged: list[str] = []
    try:
        wait_until_serving(address, server, 120)
        questions = commonsense_qa(400)
        rng = random.Random(9)
        async with ExperienceClient(address, "burst", max_attempts=1, timeout_s=30) as client:

            async def writer(offset: int) -> None:
                for q in questions[offset::4]:
                    try:
                        response = await client.record(q.prompt(), sampled_paths(rng, q.answer))
                    except grpc.aio.AioRpcError:
                        return
                    acknowledged.append(response.experience.id)

            writers = [asyncio.create_task(writer(i)) for i in range(4)]
            while len(acknowledged) < 60:
                await asyncio.sleep(0.01)
            server.send_signal(signal.SIGKILL)
            await asyncio.gather(*writers)
    finally:
        server.kill()
        server.wait()
    assert server.returncode == -signal.SIGKILL

    with service_process("experience", experience_flags(embedding_service, tmp_path)) as restarted:
        async with ExperienceClient(restarted.address, "burst") as client:
            stored, token = set(), ""
            while True:
                page = await client.list(page_size=500, page_token=token)
                stored |= {e.id for e in page.experiences}
                if not (token := page.next_page_token):
                    break
    lost = set(acknowledged) - stored
    print(f"acknowledged {len(acknowledged)} writes before kill -9; {len(stored)} stored; lost {len(lost)}")
    assert not lost


async def test_embedding_outage_answers_unavailable(tmp_path: Path, embedding_model: object) -> None:
    with service_process("embedding", ["--no-fast"]) as embedding:
        with service_process("experience", experience_flags(embedding, tmp_path)) as experience:
            embedding.process.send_signal(signal.SIGKILL)
            embedding.process.wait()
            async with ExperienceClient(experience.address, "outage", max_attempts=1, timeout_s=30) as client:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await client.orchestrate("anything?", k=2)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "embedding service" in caught.value.details()
                assert (await client.stats()).experience_count == 0  # still serving what needs no embedding
