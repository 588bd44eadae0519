"""Authentication, tenant isolation and mutual TLS, on a real embedding + experience mesh."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rosemesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from rosemesh.experience.v1 import experience_pb2 as pb
from rosemesh.experience.v1 import experience_pb2_grpc

from services.embedding.client import EmbeddingClient
from services.experience.client import ExperienceClient
from services.offline.datasets import commonsense_qa
from services.runtime.security import ClientTls, channel_credentials, hash_token, new_token
from services.supervisor import RunningService, service_process
from tests.conftest import TEST_FLAGS
from tests.runtime.pki import CertificateAuthority, Issued

TENANTS = ("acme", "globex")


@dataclass(frozen=True)
class SecureMesh:
    embedding: RunningService
    experience: RunningService
    tokens: dict[str, str]
    ca: Path
    client: Issued
    rogue_client: Issued

    def tls(self) -> ClientTls:
        return ClientTls(self.ca, self.client.cert, self.client.key)


@pytest.fixture(scope="module")
def secure_mesh(embedding_model: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureMesh]:
    root = tmp_path_factory.mktemp("secure")
    ca = CertificateAuthority(root, "mesh-ca")
    rogue = CertificateAuthority(root, "rogue-ca")
    tokens = {tenant: new_token() for tenant in (*TENANTS, "mesh")}
    tokens_file = root / "tokens"
    tokens_file.write_text("".join(f"{tenant} {hash_token(token)}\n" for tenant, token in tokens.items()))

    def flags(stem: str) -> list[str]:
        issued = ca.issue(stem, stem)
        return [
            "--tls-cert-file", str(issued.cert), "--tls-key-file", str(issued.key),
            "--tls-ca-file", str(ca.path), "--tls-require-client-cert",
            "--auth-tokens-file", str(tokens_file),
        ]  # fmt: skip

    with service_process("embedding", [*TEST_FLAGS, *flags("embedding")]) as embedding:
        experience_flags = [
            *flags("experience"),
            "--embedding-target", embedding.address,
            "--data-dir", str(root / "pool"),
            "--outbound-token", tokens["mesh"],
        ]  # fmt: skip
        with service_process("experience", experience_flags) as experience:
            yield SecureMesh(
                embedding,
                experience,
                tokens,
                ca.path,
                ca.issue("client", "product-backend"),
                rogue.issue("rogue-client", "product-backend"),
            )


def client(mesh: SecureMesh, tenant: str, token: str | None) -> ExperienceClient:
    return ExperienceClient(mesh.experience.address, tenant, tls=mesh.tls(), token=token, timeout_s=60)


async def test_health_is_open_and_calls_without_a_valid_token_are_unauthenticated(secure_mesh: SecureMesh) -> None:
    async with grpc.aio.secure_channel(secure_mesh.experience.address, channel_credentials(secure_mesh.tls())) as ch:
        health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=30)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = experience_pb2_grpc.ExperienceServiceStub(ch)
        for metadata in [(), (("authorization", "Bearer not-a-token"),), (("authorization", "Basic abc"),)]:
            for call, request in [
                (stub.Stats, pb.StatsRequest(tenant="acme")),
                (stub.Orchestrate, pb.OrchestrateRequest(tenant="acme", question="2+2?", k=2)),
                (stub.Record, pb.RecordRequest(tenant="acme", question="q", paths=[pb.ReasoningPath(reasoning="r", answer="a")])),
            ]:  # fmt: skip
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call(request, metadata=metadata, timeout=30)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, (call, metadata)
    async with grpc.aio.secure_channel(secure_mesh.embedding.address, channel_credentials(secure_mesh.tls())) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await embedding_pb2_grpc.EmbeddingServiceStub(ch).Embed(embedding_pb2.EmbedRequest(texts=["hi"]), timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_body_tenant_that_disagrees_with_the_token_is_denied(secure_mesh: SecureMesh) -> None:
    async with client(secure_mesh, "globex", secure_mesh.tokens["acme"]) as pool:
        for call in (pool.stats(), pool.orchestrate("anything?", k=2), pool.record("q?", [("r", "a")])):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_token_for_one_tenant_never_reads_another(secure_mesh: SecureMesh) -> None:
    """Random questions (some in both tenants) recorded in random order; every read path of each
    tenant sees exactly its own records. The experience service reaches the embedding service
    with the caller's token passed through, over mutual TLS."""
    rng = random.Random(8)
    questions = [q.prompt() for q in commonsense_qa(60)]
    owned: dict[str, dict[str, str]] = {tenant: {} for tenant in TENANTS}  # id -> question
    clients = {tenant: client(secure_mesh, "", secure_mesh.tokens[tenant]) for tenant in TENANTS}
    try:
        for question in questions:
            for tenant in rng.sample(TENANTS, rng.choice([1, 1, 2])):
                answer = rng.choice("ABCDE")
                response = await clients[tenant].record(question, [(f"think\nso {answer}", answer)])
                assert response.experience.tenant == tenant
                owned[tenant][response.experience.id] = question
        for tenant, other in (TENANTS, TENANTS[::-1]):
            pool, mine, theirs = clients[tenant], owned[tenant], owned[other]
            assert (await pool.stats()).experience_count == len(mine)
            seen, token = set(), ""
            while True:
                page = await pool.list(page_size=7, page_token=token)
                seen |= {e.id for e in page.experiences}
                assert all(e.tenant == tenant for e in page.experiences)
                if not (token := page.next_page_token):
                    break
            assert seen == set(mine)
            for experience_id in rng.sample(sorted(set(theirs) - set(mine)), 10):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await pool.get(experience_id)
                assert caught.value.code() == grpc.StatusCode.NOT_FOUND
                assert not await pool.delete(experience_id)
            for question in rng.sample(questions, 5):
                shots = await pool.orchestrate(question, k=8)
                assert shots.demonstrations
                assert {d.experience.id for d in shots.demonstrations} <= set(mine)
        for tenant in TENANTS:  # the denied deletes above removed nothing
            assert (await clients[tenant].stats()).experience_count == len(owned[tenant])
    finally:
        for pool in clients.values():
            await pool.close()


@pytest.mark.parametrize("how", ["plaintext", "tls-without-client-cert", "client-cert-from-another-ca"])
async def test_mutual_tls_refuses_other_clients(secure_mesh: SecureMesh, how: str) -> None:
    address = secure_mesh.embedding.address
    if how == "plaintext":
        channel = grpc.aio.insecure_channel(address)
    elif how == "tls-without-client-cert":
        channel = grpc.aio.secure_channel(address, channel_credentials(ClientTls(secure_mesh.ca)))
    else:
        rogue = ClientTls(secure_mesh.ca, secure_mesh.rogue_client.cert, secure_mesh.rogue_client.key)
        channel = grpc.aio.secure_channel(address, channel_credentials(rogue))
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_mutual_tls_client_with_a_token_is_served(secure_mesh: SecureMesh) -> None:
    async with EmbeddingClient(
        secure_mesh.embedding.address, tls=secure_mesh.tls(), token=secure_mesh.tokens["acme"], timeout_s=60
    ) as embedding:
        assert (await embedding.embed(["hello"])).vectors.shape == (1, 384)
