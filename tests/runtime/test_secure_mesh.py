"""Every service with mutual TLS and tenant tokens on, the calling services reaching the
embedding service through the one embedding gateway (services.adapters.embedding_service) with
their client TLS settings and outbound token: the production profile's security, on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from rosemesh.critique.v1 import critique_pb2

from services.common.errors import PermissionDenied
from services.common.model_versions import ModelVersions
from services.critique.client import CritiqueClient
from services.earlyexit.client import EarlyExitClient
from services.embedding.client import EmbeddingClient
from services.experience.client import ExperienceClient
from services.multilabel.client import MultiLabelClient
from services.multilabel.core.bundle import StoredMultiLabelModel
from services.multilabel.core.bundle import models_root as multilabel_root
from services.multilabel.offline.train import ClassifierConfig, MetaConfig, train_multilabel
from services.multilabel.server import MultiLabelSettings
from services.runtime.security import ClientTls, hash_token, new_token
from services.supervisor import RunningService, service_process
from tests.conftest import MULTILABEL_MODEL, TEST_FLAGS
from tests.critique.test_service import FakeJudge
from tests.helpers import CRITIQUE_WITHOUT_MODELS
from tests.runtime.pki import CertificateAuthority


@dataclass(frozen=True)
class Mesh:
    services: dict[str, RunningService]
    tls: ClientTls
    token: str  # tenant acme's
    ca: CertificateAuthority
    outbound_token: str  # the services' own


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory,
    earlyexit_models_dir: Path,
    multilabel_trained: tuple[Path, StoredMultiLabelModel],
) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("secure-mesh")
    ca = CertificateAuthority(root, "mesh-ca")
    tokens = {tenant: new_token() for tenant in ("acme", "mesh")}
    tokens_file = root / "tokens"
    tokens_file.write_text("".join(f"{tenant} {hash_token(token)}\n" for tenant, token in tokens.items()))

    def secure(name: str) -> list[str]:
        issued = ca.issue(name, name)
        return [
            "--tls-cert-file", str(issued.cert), "--tls-key-file", str(issued.key), "--tls-ca-file", str(ca.path),
            "--tls-require-client-cert", "--auth-tokens-file", str(tokens_file), "--outbound-token", tokens["mesh"],
        ]  # fmt: skip

    judge = FakeJudge()
    threading.Thread(target=judge.serve_forever, daemon=True).start()
    running: dict[str, RunningService] = {}
    try:
        with service_process("embedding", [*TEST_FLAGS, *secure("embedding")]) as embedding:
            gateway = ["--embedding-target", embedding.address]
            flags = {
                "experience": [*gateway, "--data-dir", str(root / "pool")],
                "critique": [*gateway, "--judge", "endpoint", "--judge-endpoint", judge.base_url,
                             "--judge-model", "fake-judge", "--judge-max-retries", "0", *CRITIQUE_WITHOUT_MODELS],  # fmt: skip
                "multilabel": [*gateway, "--models-dir", str(multilabel_trained[0]), "--no-train-default"],
                "earlyexit": ["--models-dir", str(earlyexit_models_dir), "--no-train-default"],
            }
            running["embedding"] = embedding
            with (
                service_process("experience", [*flags["experience"], *secure("experience")]) as experience,
                service_process("critique", [*flags["critique"], *secure("critique")]) as critique,
                service_process("multilabel", [*flags["multilabel"], *secure("multilabel")]) as multilabel,
                service_process("earlyexit", [*flags["earlyexit"], *secure("earlyexit")]) as earlyexit,
            ):
                running |= {"experience": experience, "critique": critique, "multilabel": multilabel, "earlyexit": earlyexit}
                client = ca.issue("client", "product-backend")
                tls = ClientTls(ca.path, client.cert, client.key)
                yield Mesh(running, tls, tokens["acme"], ca, tokens["mesh"])
    finally:
        judge.shutdown()
        judge.server_close()


def options(mesh: Mesh, token: str | None) -> dict[str, object]:
    return {"tls": mesh.tls, "token": token, "timeout_s": 60, "max_attempts": 1}


async def test_every_service_answers_a_tenant_over_mutual_tls(mesh: Mesh) -> None:
    """Experience, critique and multi-label each embed through the gateway, over TLS, with the
    caller's token passed on; early exit serves its own model."""
    s = mesh.services
    async with ExperienceClient(s["experience"].address, "", **options(mesh, mesh.token)) as experience:
        recorded = await experience.record("What is 2 plus 3?", [("2 plus 3\nis 5", "5")])
        assert recorded.experience.tenant == "acme"  # from the token, not the body
        shots = await experience.orchestrate("What is 2 plus 4?", k=1, consistency_token=recorded.consistency_token)
        assert shots.demonstrations[0].experience.id == recorded.experience.id
    async with CritiqueClient(s["critique"].address, **options(mesh, mesh.token)) as critique:
        response = await critique.score(
            "List unusual uses for a brick.", "1. a doorstop\n2. red pigment for cave paintings",
            rubric="creativity", common_answers=["a doorstop"],
        )  # fmt: skip
        sources = {d.dimension: d.source for d in response.result.dimensions}
        assert sources["fluency"] == critique_pb2.SCORE_SOURCE_EMBEDDING  # the embedding call went through
    async with MultiLabelClient(s["multilabel"].address, **options(mesh, mesh.token)) as multilabel:
        predicted = await multilabel.predict(["you are a wonderful person", "I will hurt you"])
        assert len(predicted.predictions) == 2
    async with EarlyExitClient(s["earlyexit"].address, **options(mesh, mesh.token)) as earlyexit:
        classified = await earlyexit.classify(["a fine film", "a dull film"])
        assert len(classified.results) == 2


CLIENTS = {
    "embedding": (EmbeddingClient, lambda c: c.embed(["hello"])),
    "experience": (lambda address, **o: ExperienceClient(address, "acme", **o), lambda c: c.stats()),
    "critique": (CritiqueClient, lambda c: c.list_rubrics()),
    "multilabel": (MultiLabelClient, lambda c: c.list_models()),
    "earlyexit": (EarlyExitClient, lambda c: c.list_models()),
}


@pytest.mark.parametrize("name", list(CLIENTS))
async def test_no_service_serves_a_call_without_a_token(mesh: Mesh, name: str) -> None:
    make, call = CLIENTS[name]
    async with make(mesh.services[name].address, **options(mesh, mesh.token)) as client:
        await call(client)  # the control: with the token, the same call is served
    async with make(mesh.services[name].address, **options(mesh, None)) as client:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(client)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_training_reaches_the_secure_embedding_service_with_the_services_settings(
    mesh: Mesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the chart's training Job does: its settings (TLS files, outbound token) from the
    environment, the embedding calls made with them, a version published."""
    issued = mesh.ca.issue("train", "train")
    environment = {
        "MODELS_DIR": str(tmp_path), "TLS_CERT_FILE": str(issued.cert), "TLS_KEY_FILE": str(issued.key),
        "TLS_CA_FILE": str(mesh.ca.path), "OUTBOUND_TOKEN": mesh.outbound_token,
    }  # fmt: skip
    for key, value in environment.items():
        monkeypatch.setenv(f"ROSEMESH_MULTILABEL_{key}", value)
    settings = MultiLabelSettings()
    target = mesh.services["embedding"].address
    quick = {"classifier_config": ClassifierConfig(epochs=5), "meta_config": MetaConfig(updates=1, episodes_per_update=1)}
    without_token = {"tls": settings.client_tls(), "token": None}
    with pytest.raises(PermissionDenied, match="refused the credentials"):  # at once, not waited out
        train_multilabel(MULTILABEL_MODEL, tmp_path, target, embedding_security=without_token, **quick)
    stored = train_multilabel(MULTILABEL_MODEL, tmp_path, target, embedding_security=settings.client_security(), **quick)
    assert ModelVersions(multilabel_root(tmp_path)).current(MULTILABEL_MODEL) == stored.manifest.version
