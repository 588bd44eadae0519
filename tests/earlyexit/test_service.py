"""The early-exit service end to end: real fine-tuned MiniLM models (briefly trained on real
Rotten Tomatoes data), their ONNX exports, the gRPC service on 127.0.0.1, and the real
tritonserver running the BLS orchestrator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from services.adapters.tritonserver import TritonServer, triton_unavailable_reason
from services.common.base_model import source_model_dir
from services.common.tokens import TextEncoder, pad_batch
from services.earlyexit.backends.onnx import OnnxRuntimeBackend
from services.earlyexit.backends.torch_model import Encoder, HashEEClassifier, LastExit, MultiExitClassifier
from services.earlyexit.backends.triton import TritonBackend, render_repository
from services.earlyexit.client import EarlyExitClient
from services.earlyexit.core.bundle import StoredModel
from services.earlyexit.core.policy import ExitMode, ExitPolicy, ModelKind
from services.earlyexit.offline.train import (
    MAX_TOKENS,
    PARITY_TOLERANCE,
    _tensors,
    distillation_loss,
    export_multi_exit,
    export_single_graph,
)
from services.offline.datasets import rotten_tomatoes_splits
from services.supervisor import RunningService, service_process
from tests.conftest import EARLYEXIT_MODEL as MODEL
from tests.helpers import isolated_environment

HASHEE = "rotten_tomatoes-hashee-frequency"
PLAIN = "rotten_tomatoes-plain"


@pytest.fixture(scope="session")
def stored(earlyexit_models_dir: Path) -> dict[str, StoredModel]:
    from services.earlyexit.core.bundle import list_models

    return {model.name: model for model in list_models(earlyexit_models_dir)}


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return [row.text for row in rotten_tomatoes_splits().test[:96]]


def tokenizer() -> TextEncoder:
    return TextEncoder(source_model_dir() / "tokenizer.json", MAX_TOKENS)


def real_batch(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    encoded = tokenizer().encode(texts)
    return _tensors(encoded, list(range(len(encoded))))


def fresh_encoder() -> Encoder:
    encoder = Encoder(json.loads((source_model_dir() / "config.json").read_text()))
    encoder.load_bert(source_model_dir())
    return encoder


def test_every_exit_of_the_onnx_segments_matches_pytorch(tmp_path: Path, sentences: list[str]) -> None:
    torch.manual_seed(1)
    model = MultiExitClassifier(fresh_encoder(), num_labels=5).eval()
    assert export_multi_exit(model, tmp_path, real_batch(sentences[:64])) < PARITY_TOLERANCE


def test_the_hashee_graph_matches_pytorch(tmp_path: Path, sentences: list[str]) -> None:
    torch.manual_seed(2)
    encoder = fresh_encoder()
    table = torch.from_numpy(np.random.default_rng(0).integers(1, 7, encoder.embeddings.word.num_embeddings))
    model = HashEEClassifier(encoder, num_labels=3, exit_table=table).eval()
    assert export_single_graph(model, tmp_path / "hashee.onnx", real_batch(sentences[:64])) < PARITY_TOLERANCE


def test_the_plain_graph_matches_pytorch(tmp_path: Path, sentences: list[str]) -> None:
    torch.manual_seed(3)
    model = MultiExitClassifier(fresh_encoder(), num_labels=4, every_layer=False).eval()
    graph = tmp_path / "plain.onnx"
    assert export_single_graph(LastExit(model), graph, real_batch(sentences[:64])) < PARITY_TOLERANCE


def test_distillation_pulls_early_exits_towards_the_last_one() -> None:
    teacher = torch.tensor([[4.0, 0.0]])
    assert distillation_loss([teacher.clone(), teacher], 2.0).item() < 1e-6
    assert distillation_loss([torch.tensor([[0.0, 4.0]]), teacher], 2.0).item() > 1.0
    student = torch.zeros(1, 2, requires_grad=True)
    distillation_loss([student, teacher.requires_grad_()], 2.0).backward()
    assert student.grad is not None and student.grad[0, 0] < 0 and teacher.grad is None  # the teacher is fixed
    # A given teacher (the plain classifier's logits) is taught to every exit, the last one too.
    last = torch.tensor([[0.0, 4.0]], requires_grad=True)
    distillation_loss([torch.zeros(1, 2), last], 2.0, teacher_logits=torch.tensor([[4.0, 0.0]])).backward()
    assert last.grad is not None and last.grad[0, 0] < 0


def test_training_registers_measured_models(stored: dict[str, StoredModel]) -> None:
    multi = stored[MODEL].manifest
    assert multi.labels == ["fresh", "rotten"] and multi.num_layers == 6
    static = [p for p in multi.operating_points if p.exit_policy.mode is ExitMode.STATIC]
    assert [p.mean_layers for p in static] == [1, 2, 3, 4, 5, 6]
    assert all(0 <= p.accuracy <= 1 and p.throughput > 0 for p in multi.operating_points)
    assert [p.mean_flops for p in static] == sorted(p.mean_flops for p in static)
    hashee = stored[HASHEE].manifest
    (point,) = hashee.operating_points
    assert 1 < point.mean_layers < 6 and point.mean_flops < static[-1].mean_flops
    plain = stored[PLAIN].manifest
    (baseline,) = plain.operating_points
    assert plain.kind is ModelKind.PLAIN and baseline.exit_policy == ExitPolicy(ExitMode.STATIC, static_layer=6)
    assert multi.baseline_accuracy == baseline.accuracy
    assert baseline.mean_flops < static[-1].mean_flops  # one head, not six


# --- the gRPC service ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def earlyexit_service(earlyexit_models_dir: Path) -> Iterator[RunningService]:
    flags = ["--models-dir", str(earlyexit_models_dir), "--no-train-default", "--max-texts", "40"]
    with service_process("earlyexit", flags) as service:
        yield service


@pytest.fixture
async def client(earlyexit_service: RunningService) -> AsyncIterator[EarlyExitClient]:
    async with EarlyExitClient(earlyexit_service.address, timeout_s=60) as client:
        yield client


async def test_classify_answers_with_label_exit_layer_and_flops(client: EarlyExitClient) -> None:
    response = await client.classify(["what a wonderful film", "a dull, lifeless mess"])
    assert response.model == MODEL and response.backend == "onnxruntime"
    assert list(response.labels) == ["fresh", "rotten"]
    for result in response.results:
        assert result.label in response.labels
        assert 1 <= result.exit_layer <= 6
        assert sum(result.probabilities) == pytest.approx(1.0, abs=1e-5)
        assert result.flops > 0 and result.token_count > 2


async def test_static_policy_exits_at_the_layer_asked(client: EarlyExitClient, sentences: list[str]) -> None:
    for layer in (1, 4):
        response = await client.classify(
            sentences[:20], policy=ExitPolicy(ExitMode.STATIC, static_layer=layer)
        )
        assert {r.exit_layer for r in response.results} == {layer}
    shallow = await client.classify(sentences[:5], policy=ExitPolicy(ExitMode.STATIC, static_layer=1))
    deep = await client.classify(sentences[:5], policy=ExitPolicy(ExitMode.STATIC, static_layer=6))
    assert all(a.flops * 6 == b.flops for a, b in zip(shallow.results, deep.results, strict=True))


async def test_the_plain_model_is_served_as_one_graph(client: EarlyExitClient, sentences: list[str]) -> None:
    response = await client.classify(sentences[:8], model=PLAIN)
    assert response.model == PLAIN and {r.exit_layer for r in response.results} == {6}
    assert all(r.token_exits == [] for r in response.results)


async def test_hashee_reports_every_token_exit(client: EarlyExitClient) -> None:
    response = await client.classify(["the film is a delight"], model=HASHEE)
    (result,) = response.results
    assert response.policy.mode == 4 and result.exit_layer == 6
    tokens = [t.token for t in result.token_exits]
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and len(tokens) == result.token_count
    assert result.token_exits[0].exit_layer == 6
    assert min(t.exit_layer for t in result.token_exits) < 6


async def test_list_models_describes_labels_exits_and_the_table(client: EarlyExitClient) -> None:
    models = {m.name: m for m in await client.list_models()}
    assert set(models) == {MODEL, HASHEE, PLAIN}
    assert models[PLAIN].kind == 3 and list(models[PLAIN].supported_modes) == [1]
    assert models[MODEL].is_default and models[MODEL].num_layers == 6
    assert list(models[MODEL].supported_modes) == [1, 2, 3]
    assert len(models[MODEL].operating_points) >= 6
    assert models[HASHEE].token_hash == 1


@pytest.mark.parametrize(
    ("texts", "model", "policy", "field", "words"),
    [
        (["fine"], "sentiment-xl", None, "model", "unknown model 'sentiment-xl'"),
        (
            ["fine"],
            "",
            ExitPolicy(ExitMode.DYNAMIC, entropy_threshold=3.0),
            "policy.entropy_threshold",
            "ln(2)",
        ),
        (["fine"], "", ExitPolicy(ExitMode.STATIC, static_layer=9), "policy.static_layer", "depth 6"),
        (["fine", "  "], "", None, "texts[1]", "empty"),
        ([], "", None, "texts", "at least one"),
        (["fine"] * 41, "", None, "texts", "at most 40"),
        (["fine"], HASHEE, ExitPolicy(ExitMode.PATIENCE, patience=2), "policy.mode", "support hashee"),
        (["fine"], PLAIN, ExitPolicy(ExitMode.STATIC, static_layer=3), "policy.static_layer", "only after its last"),
    ],
)
async def test_bad_requests_get_invalid_argument_naming_the_field(
    client: EarlyExitClient, texts: list[str], model: str, policy: ExitPolicy | None, field: str, words: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.classify(texts, model=model, policy=policy)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details() and words in caught.value.details()
    assert (await client.classify(["still serving"])).results  # and the server keeps serving


# --- Triton ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def triton_url(stored: dict[str, StoredModel], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if reason := triton_unavailable_reason():
        pytest.skip(f"Triton is not usable here: {reason}")
    root = tmp_path_factory.mktemp("triton-earlyexit")
    repository = render_repository(root / "models", list(stored.values()), "local")
    # The python models run where rosemesh is not installed, as in a stock Triton image (the
    # local profile's segments run ONNX Runtime in the python backend; production's use
    # Triton's onnxruntime backend).
    isolated = isolated_environment(root / "no-rosemesh", ("numpy", "onnxruntime"))
    with TritonServer(repository, root / "server", python_prefix=isolated) as server:
        yield server.grpc_url


@pytest.fixture
async def backends(
    stored: dict[str, StoredModel], triton_url: str
) -> AsyncIterator[tuple[OnnxRuntimeBackend, TritonBackend]]:
    onnx, triton = OnnxRuntimeBackend(list(stored.values())), TritonBackend(triton_url, list(stored.values()))
    await triton.start()
    yield onnx, triton
    await triton.close()
    await onnx.close()


@pytest.fixture(scope="module")
def median_entropy(stored: dict[str, StoredModel], sentences: list[str]) -> float:
    """The median layer-1 entropy on the test sentences: as a threshold, it makes about half the
    rows leave at layer 1 and the rest later, whatever the briefly trained model's confidence."""
    from services.earlyexit.backends.onnx import OnnxModel
    from services.earlyexit.core.policy import entropy, softmax

    model = OnnxModel(stored[MODEL])
    ids, mask = pad_batch(tokenizer().encode(sentences))
    _, logits = model.run_segment(0, ids, mask)
    return float(np.median(entropy(softmax(logits.astype(np.float64)))))


POLICY_KINDS = ["static-2", "entropy-median", "patience-2", "hashee"]


def policy_for(kind: str, threshold: float) -> tuple[str, ExitPolicy]:
    return {
        "static-2": (MODEL, ExitPolicy(ExitMode.STATIC, static_layer=2)),
        "entropy-median": (MODEL, ExitPolicy(ExitMode.DYNAMIC, entropy_threshold=threshold)),
        "patience-2": (MODEL, ExitPolicy(ExitMode.PATIENCE, patience=2)),
        "hashee": (HASHEE, ExitPolicy(ExitMode.HASHEE)),
    }[kind]


@pytest.mark.parametrize("kind", POLICY_KINDS)
async def test_triton_and_in_process_backends_agree(
    backends: tuple[OnnxRuntimeBackend, TritonBackend], sentences: list[str], median_entropy: float, kind: str
) -> None:
    model, policy = policy_for(kind, median_entropy)
    onnx, triton = backends
    for start in range(0, len(sentences), 32):
        ids, mask = pad_batch(tokenizer().encode(sentences[start : start + 32]))
        local = await onnx.classify(model, ids, mask, policy)
        remote = await triton.classify(model, ids, mask, policy)
        assert np.array_equal(local.logits.argmax(1), remote.logits.argmax(1))
        assert np.array_equal(local.exit_layers, remote.exit_layers)
        np.testing.assert_allclose(local.logits, remote.logits, atol=1e-5)


@pytest.mark.parametrize("kind", ["entropy-median", "patience-2"])
async def test_the_batch_shrinking_bls_decides_like_batch_size_one(
    backends: tuple[OnnxRuntimeBackend, TritonBackend], sentences: list[str], median_entropy: float, kind: str
) -> None:
    _, policy = policy_for(kind, median_entropy)
    _, triton = backends
    encoded = tokenizer().encode(sentences[:24])
    batched = await triton.classify(MODEL, *pad_batch(encoded), policy)
    layers = set()
    for row, text in enumerate(encoded):
        alone = await triton.classify(MODEL, *pad_batch([text]), policy)
        assert alone.exit_layers[0] == batched.exit_layers[row]
        np.testing.assert_allclose(alone.logits[0], batched.logits[row], atol=1e-4)
        layers.add(int(alone.exit_layers[0]))
    if policy.mode is ExitMode.DYNAMIC:
        assert len(layers) > 1, f"rows should leave at different layers, all left at {layers}"


async def test_the_service_answers_through_triton(earlyexit_models_dir: Path, triton_url: str) -> None:
    flags = [
        "--models-dir",
        str(earlyexit_models_dir),
        "--no-train-default",
        "--backend",
        "triton",
        "--triton-url",
        triton_url,
    ]
    with service_process("earlyexit", flags) as service:
        async with EarlyExitClient(service.address, timeout_s=60) as client:
            response = await client.classify(
                ["a wonderful film"], policy=ExitPolicy(ExitMode.STATIC, static_layer=3)
            )
    assert response.backend == "triton" and response.results[0].exit_layer == 3


async def test_the_exported_hashee_graph_ignores_padding(
    stored: dict[str, StoredModel], sentences: list[str]
) -> None:
    backend = OnnxRuntimeBackend([stored[HASHEE]])
    short, *others = sorted(sentences[:16], key=len)
    policy = ExitPolicy(ExitMode.HASHEE)
    alone = await backend.classify(HASHEE, *pad_batch(tokenizer().encode([short])), policy)
    padded = await backend.classify(HASHEE, *pad_batch(tokenizer().encode([short, *others])), policy)
    await backend.close()
    np.testing.assert_allclose(alone.logits[0], padded.logits[0], atol=1e-5)
