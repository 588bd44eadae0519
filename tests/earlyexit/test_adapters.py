"""Tenant adapters: Late Prompt Tuning on the shared frozen backbone, its exported graphs, mixed
tenant batches, and Adapt operations through the real service and its worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from rosemesh.earlyexit.v1 import earlyexit_pb2 as pb
from rosemesh.explain.v1 import explain_pb2

from services.common.tokens import TextEncoder, pad_batch
from services.earlyexit.backends.onnx import OnnxBackbone
from services.earlyexit.backends.torch_explain import AdapterModule, TorchAttributor
from services.earlyexit.backends.torch_model import load_base_encoder
from services.earlyexit.client import EarlyExitClient
from services.earlyexit.core.adapters import (
    MANIFEST,
    WEIGHTS,
    AdapterManifest,
    AdaptMethod,
    StoredAdapter,
    StoredBackbone,
    TenantAdapter,
    load_adapter,
    write_json,
)
from services.earlyexit.core.jobs import AdaptSpec, JobState, JobStore
from services.earlyexit.core.tenants import adapter_logits
from services.earlyexit.offline.adapt import stratified_split
from services.earlyexit.offline.backbone import publish_backbone
from services.earlyexit.offline.lora import LoraClassifier, LoraTrainConfig, lora_weights
from services.earlyexit.offline.lpt import LatePromptClassifier, LptConfig, adapter_weights
from services.offline.datasets import rotten_tomatoes_splits
from services.runtime.security import hash_token
from services.supervisor import RunningService, service_process
from tests.helpers import scrape


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> StoredBackbone:
    return publish_backbone(tmp_path_factory.mktemp("backbone"))


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [row.text for row in rotten_tomatoes_splits().test[:24]]


def random_adapter(directory: Path, backbone: StoredBackbone, config, labels: int, seed: int) -> tuple[TenantAdapter, torch.nn.Module]:
    """An adapter of trained shape with random weights (LPT for an LptConfig, else LoRA),
    published as a bundle, and its PyTorch model."""
    torch.manual_seed(seed)
    lpt = isinstance(config, LptConfig)
    model = (LatePromptClassifier if lpt else LoraClassifier)(load_base_encoder(), labels, config).eval()
    with torch.no_grad():
        for parameter in model.trainable():
            parameter.normal_(0, 0.05)
    directory.mkdir(parents=True)
    weights = adapter_weights(model) if lpt else lora_weights(model)
    np.savez(directory / WEIGHTS, **weights)
    shape = (
        {"insertion_layer": config.insertion_layer, "prompt_length": config.prompt_length, "generator_size": config.generator_size}
        if lpt
        else {"rank": config.rank, "target_modules": list(config.target_modules)}
    )
    write_json(
        directory / MANIFEST,
        AdapterManifest(
            tenant=f"tenant{seed}", task="task", version="v1", method=AdaptMethod.LPT if lpt else AdaptMethod.LORA,
            base_model="m", backbone_version=backbone.manifest.version, labels=[str(i) for i in range(labels)],
            parameters=sum(w.size for w in weights.values()), dev_accuracy=0.5, **shape,
        ),
    )
    return load_adapter(StoredAdapter(directory)), model


@pytest.mark.parametrize(
    "config", [LptConfig(insertion_layer=3, prompt_length=4), LoraTrainConfig(rank=4)], ids=["lpt", "lora"]
)
def test_the_served_adapter_matches_its_pytorch_model(tmp_path: Path, backbone: StoredBackbone, texts: list[str], config) -> None:
    adapter, model = random_adapter(tmp_path / "a", backbone, config, 2, 1)
    encoded = TextEncoder(backbone.tokenizer_path, 64).encode(texts)
    ids, mask = pad_batch(encoded)
    with torch.no_grad():
        expected = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    served = np.stack(adapter_logits(OnnxBackbone(backbone), ids, mask, [adapter] * len(ids)))
    assert np.abs(served - expected).max() < 1e-4


def test_a_row_without_lora_gets_exactly_the_plain_layers_answer(backbone: StoredBackbone, texts: list[str]) -> None:
    """The service loads only the LoRA form of each layer; rank-0 updates must add exactly nothing."""
    import onnxruntime as ort

    ids, mask = pad_batch(TextEncoder(backbone.tokenizer_path, 64).encode(texts))
    served = OnnxBackbone(backbone)
    hidden = served.embed(ids)
    options = ort.SessionOptions()
    options.intra_op_num_threads = served.threads  # the same kernels' partitioning on both sides
    for layer in range(1, backbone.manifest.num_layers + 1):
        plain = ort.InferenceSession(str(backbone.layer_graph(layer)), options, providers=["CPUExecutionProvider"])
        (expected,) = plain.run(None, {"hidden_in": hidden, "attention_mask": mask})
        hidden = served.layer(layer, hidden, mask)
        assert np.array_equal(hidden, expected), f"layer {layer}"


@pytest.mark.parametrize(
    "config", [LptConfig(insertion_layer=3, prompt_length=4), LoraTrainConfig(rank=4, target_modules=("value",))], ids=["lpt", "lora"]
)
def test_the_adapter_explanations_differentiate_answers_as_served(
    tmp_path: Path, backbone: StoredBackbone, texts: list[str], config
) -> None:
    adapter, _ = random_adapter(tmp_path / "a", backbone, config, 3, 2)
    encoded = TextEncoder(backbone.tokenizer_path, 64).encode(texts[:6])
    ids, mask = pad_batch(encoded)
    served = np.stack(adapter_logits(OnnxBackbone(backbone), ids, mask, [adapter] * len(ids)))
    module = AdapterModule(load_base_encoder(), adapter)
    with torch.no_grad():
        differentiated = module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    assert np.abs(served - differentiated).max() < 1e-4
    pieces, delta = TorchAttributor(module).integrated_gradients(encoded[0].ids, 6, 0, steps=32)
    assert pieces.shape == (len(encoded[0].ids),) and np.abs(pieces).sum() > 0 and delta < 0.05


def test_a_rows_answer_does_not_depend_on_the_other_tenants_in_its_batch(
    tmp_path: Path, backbone: StoredBackbone, texts: list[str]
) -> None:
    graphs = OnnxBackbone(backbone)
    adapters = [
        random_adapter(tmp_path / "a", backbone, LptConfig(insertion_layer=2, prompt_length=8), 2, 1)[0],
        random_adapter(tmp_path / "b", backbone, LptConfig(insertion_layer=4, prompt_length=3), 5, 2)[0],
        random_adapter(tmp_path / "c", backbone, LptConfig(insertion_layer=4, prompt_length=6), 3, 3)[0],
        random_adapter(tmp_path / "d", backbone, LoraTrainConfig(rank=8), 4, 4)[0],
        random_adapter(tmp_path / "e", backbone, LoraTrainConfig(rank=2, target_modules=("value",)), 2, 5)[0],
    ]
    encoded = TextEncoder(backbone.tokenizer_path, 64).encode(texts)
    owners = [adapters[i % len(adapters)] for i in range(len(encoded))]
    ids, mask = pad_batch(encoded)
    mixed = adapter_logits(graphs, ids, mask, owners)
    for row, (text, owner) in enumerate(zip(encoded, owners, strict=True)):
        alone_ids, alone_mask = pad_batch([text])
        (alone,) = adapter_logits(graphs, alone_ids, alone_mask, [owner])
        assert mixed[row].shape == (len(owner.manifest.labels),)
        assert np.abs(mixed[row] - alone).max() < 1e-4
        assert mixed[row].argmax() == alone.argmax()


@pytest.mark.parametrize("modules", [("query", "value"), ("value",)], ids=["query-value", "value-only"])
def test_a_hot_tenants_merged_fast_path_answers_as_the_shared_path_does(
    tmp_path: Path, backbone: StoredBackbone, texts: list[str], modules: tuple[str, ...]
) -> None:
    graphs = OnnxBackbone(backbone)
    adapter, _ = random_adapter(tmp_path / "a", backbone, LoraTrainConfig(rank=8, target_modules=modules), 3, 1)
    ids, mask = pad_batch(TextEncoder(backbone.tokenizer_path, 64).encode(texts))
    shared = np.stack(adapter_logits(graphs, ids, mask, [adapter] * len(ids)))
    fast = adapter.logits(graphs.merge_lora(adapter).layers(graphs.embed(ids), mask), mask)
    hidden = graphs.embed(ids)
    for layer in range(1, graphs.num_layers + 1):
        hidden = graphs.layer(layer, hidden, mask)
    without_updates = adapter.logits(hidden, mask)
    assert np.abs(fast - shared).max() < 1e-4
    assert np.abs(fast - without_updates).max() > 1e-3  # the merged updates really change the answer


def test_inline_examples_are_split_stratified_with_every_label_in_dev() -> None:
    examples = [(f"text {i}", "a" if i % 3 else "b") for i in range(60)]
    data = stratified_split(examples, seed="job")
    assert data.labels == ["a", "b"]
    assert len(data.train) + len(data.dev) == 60
    assert {label for _, label in data.dev} == {0, 1}
    assert stratified_split(examples, seed="job") == data  # reproducible


def test_a_job_is_claimed_by_one_worker_and_taken_over_when_its_heartbeat_stops(tmp_path: Path) -> None:
    store = JobStore(tmp_path, heartbeat_timeout_s=0.2)
    spec = AdaptSpec(tenant="acme", task="t", method=AdaptMethod.LPT, request_id="r1")
    record, created = store.create(spec, [("x", "a"), ("y", "b")])
    again, created_again = store.create(spec, [])
    assert created and not created_again and again.id == record.id  # idempotent on request_id
    assert store.claim(record.id) and not store.claim(record.id)
    record.state = JobState.RUNNING
    store.save(record)
    assert store.runnable() == []
    time.sleep(0.3)
    assert [r.id for r in store.runnable()] == [record.id]
    assert store.claim(record.id)  # the silent worker's claim is taken over
    assert store.examples(record.id) == [("x", "a"), ("y", "b")]
    record.state = JobState.CANCELLED
    store.save(record)
    retried, created = store.create(spec, [("z", "a"), ("w", "b")])
    assert created and retried.id == record.id and retried.state is JobState.QUEUED  # a cancelled job is started again


# --- the service ---------------------------------------------------------------------------

TOKENS = {"acme": "acme-secret-token-0123456789", "globex": "globex-secret-token-0123456789"}


@pytest.fixture(scope="module")
def adapt_models_dir(earlyexit_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's early-exit models, in a folder of this module's own (jobs and adapters)."""
    directory = tmp_path_factory.mktemp("adapt-models")
    (directory / "earlyexit").symlink_to(earlyexit_models_dir / "earlyexit")
    return directory


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text("".join(f"{tenant} {hash_token(token)}\n" for tenant, token in TOKENS.items()))
    return path


def service_flags(models_dir: Path, token_file: Path) -> list[str]:
    return [
        "--models-dir", str(models_dir), "--no-train-default", "--auth-tokens-file", str(token_file),
        "--adapt-heartbeat-timeout-s", "4",
    ]


@pytest.fixture(scope="module")
def adapt_service(adapt_models_dir: Path, token_file: Path) -> Iterator[RunningService]:
    with service_process("earlyexit", service_flags(adapt_models_dir, token_file)) as service:
        yield service


@pytest.fixture
async def acme(adapt_service: RunningService) -> AsyncIterator[EarlyExitClient]:
    async with EarlyExitClient(adapt_service.address, timeout_s=60, token=TOKENS["acme"]) as client:
        yield client


@pytest.fixture
async def globex(adapt_service: RunningService) -> AsyncIterator[EarlyExitClient]:
    async with EarlyExitClient(adapt_service.address, timeout_s=60, token=TOKENS["globex"]) as client:
        yield client


def sentiment_request(task: str, count: int = 64, request_id: str = "") -> pb.AdaptRequest:
    rows = rotten_tomatoes_splits().train[:count]
    request = pb.AdaptRequest(task=task, method=pb.ADAPT_METHOD_LPT, epochs=1, request_id=request_id)
    request.lpt.prompt_length = 4
    for row in rows:
        request.examples.add(text=row.text, label=row.label)
    return request


async def finished(client: EarlyExitClient, operation: pb.Operation, timeout_s: float = 300) -> pb.Operation:
    deadline = time.monotonic() + timeout_s
    seen = {operation.state}
    while operation.state in (pb.OPERATION_STATE_QUEUED, pb.OPERATION_STATE_RUNNING):
        assert time.monotonic() < deadline, f"operation stuck: {operation}"
        await asyncio.sleep(0.5)
        operation = await client.get_operation(operation.id)
        seen.add(operation.state)
    return operation


async def test_a_tenant_adapts_a_task_and_classifies_with_it(acme: EarlyExitClient, globex: EarlyExitClient) -> None:
    operation = await acme.adapt(sentiment_request("reviews", request_id="first"))
    assert operation.tenant == "acme" and operation.state == pb.OPERATION_STATE_QUEUED
    again = await acme.adapt(sentiment_request("reviews", request_id="first"))
    assert again.id == operation.id  # a retried call does not start a second job
    done = await finished(acme, operation)
    assert done.state == pb.OPERATION_STATE_SUCCEEDED, done.error
    assert done.progress == 1.0 and done.HasField("dev_accuracy") and done.adapter_version
    response = await acme.classify_task(["a moving, beautifully acted film", "a tedious mess"], "reviews")
    assert response.model == "reviews" and response.model_version == done.adapter_version
    assert sorted(response.labels) == ["fresh", "rotten"]
    for result in response.results:
        assert abs(sum(result.probabilities) - 1) < 1e-4 and result.label in response.labels
    (info,) = await acme.list_adapters()
    assert info.task == "reviews" and info.parameters > 0 and info.insertion_layer == 4

    # Another tenant sees neither the adapter nor the operation, and cannot name acme's tenant.
    assert await globex.list_adapters() == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await globex.classify_task(["fine"], "reviews")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await globex.classify_task(["fine"], "reviews", tenant="acme")
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await globex.get_operation(operation.id)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (lambda r: r.ClearField("examples"), "examples", "labelled examples or a data set"),
        (lambda r: [setattr(e, "label", "fresh") for e in r.examples], "examples", "at least two labels"),
        (lambda r: setattr(r.examples[0], "text", "  "), "examples[0].text", "is empty"),
        (lambda r: setattr(r, "method", 7), "method", "ADAPT_METHOD_LPT"),
        (lambda r: setattr(r, "dataset", "imdb-nope"), "examples", "not both"),
        (lambda r: setattr(r.lpt, "insertion_layer", 9), "lpt.insertion_layer", "2 to 6"),
        (lambda r: setattr(r.lora, "rank", 65), "lora.rank", "1 to 64"),
        (lambda r: r.lora.target_modules.append("ffn_in"), "lora.target_modules", "not served"),
        (lambda r: setattr(r, "task", "Bad Name"), "task", "a-z"),
        (lambda r: setattr(r, "epochs", 0.0), "epochs", "above 0"),
        (lambda r: r.examples.extend([r.examples[0]] * 50_000), "examples", "at most 50000"),
    ],
)
async def test_bad_adapt_requests_are_refused_with_the_field_at_fault(acme: EarlyExitClient, change, field: str, message: str) -> None:
    request = sentiment_request("bad", count=8)
    change(request)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await acme.adapt(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details() and message in caught.value.details()


async def test_a_lora_task_is_trained_and_served_beside_an_lpt_one(acme: EarlyExitClient) -> None:
    request = sentiment_request("reviews-lora")
    request.method, request.lora.rank = pb.ADAPT_METHOD_LORA, 4
    done = await finished(acme, await acme.adapt(request))
    assert done.state == pb.OPERATION_STATE_SUCCEEDED, done.error
    texts = ["a moving, beautifully acted film", "a tedious mess"]
    lora, lpt = await asyncio.gather(acme.classify_task(texts, "reviews-lora"), acme.classify_task(texts, "reviews"))
    assert lora.model_version == done.adapter_version and len(lora.results) == len(lpt.results) == 2
    infos = {info.task: info for info in await acme.list_adapters()}
    assert infos["reviews-lora"].method == pb.ADAPT_METHOD_LORA and infos["reviews-lora"].rank == 4


async def test_an_adapted_task_is_explained_by_occlusion_through_its_tenant_path(acme: EarlyExitClient) -> None:
    texts = ["a moving, beautifully acted film", "a tedious mess"]
    classified = await acme.classify_task(texts, "reviews")
    explained = await acme.explain(pb.ExplainRequest(texts=texts, task="reviews"))
    assert explained.model == "reviews" and explained.model_version == classified.model_version
    for result, explanation, text in zip(classified.results, explained.explanations, texts, strict=True):
        assert explanation.classification.label == result.label
        occlusion, gradients = explanation.attributions
        assert occlusion.method == explain_pb2.ATTRIBUTION_METHOD_OCCLUSION
        assert gradients.method == explain_pb2.ATTRIBUTION_METHOD_INTEGRATED_GRADIENTS and gradients.convergence_delta < 0.1
        for attribution in explanation.attributions:
            assert attribution.target == result.label
            assert [w.word for w in attribution.words] == [text[w.start : w.end] for w in attribution.words]
            assert any(w.score != 0 for w in attribution.words)
        assert explanation.exit_trace.exit_layer == 6 and len(explanation.exit_trace.layers) == 1
    lora = await acme.explain(pb.ExplainRequest(texts=texts[:1], task="reviews-lora"))
    assert [a.method for a in lora.explanations[0].attributions] == [
        explain_pb2.ATTRIBUTION_METHOD_OCCLUSION, explain_pb2.ATTRIBUTION_METHOD_INTEGRATED_GRADIENTS
    ]
    attention = explain_pb2.ExplainOptions(methods=[explain_pb2.ATTRIBUTION_METHOD_ATTENTION])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await acme.explain(pb.ExplainRequest(texts=texts, task="reviews", options=attention))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "attention" in caught.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await acme.explain(pb.ExplainRequest(texts=["fine"], task="no-such-task"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_hot_lora_tenant_switches_to_its_fast_path_with_the_same_answers(
    acme: EarlyExitClient, adapt_service: RunningService
) -> None:
    request = sentiment_request("hot-lora")
    request.method, request.lora.rank = pb.ADAPT_METHOD_LORA, 4
    done = await finished(acme, await acme.adapt(request))
    assert done.state == pb.OPERATION_STATE_SUCCEEDED, done.error
    texts = ["a moving, beautifully acted film", "a tedious mess"]
    before = scrape(adapt_service)
    first = await acme.classify_task(texts, "hot-lora")  # cold: served at once on the shared path
    for _ in range(4):  # hot: its fast path is prepared beside the serving worker
        await acme.classify_task(texts, "hot-lora")
    for _ in range(100):
        if _sample(scrape(adapt_service), "rosemesh_adapter_fast_paths_prepared_total", outcome="ready") > _sample(
            before, "rosemesh_adapter_fast_paths_prepared_total", outcome="ready"
        ):
            break
        await asyncio.sleep(0.1)
    served_fast = _sample(scrape(adapt_service), "rosemesh_adapter_rows_total", path="fast")
    later = await acme.classify_task(texts, "hot-lora")
    assert _sample(scrape(adapt_service), "rosemesh_adapter_rows_total", path="fast") == served_fast + len(texts)
    for cold, hot in zip(first.results, later.results, strict=True):
        assert cold.label == hot.label
        assert np.allclose(cold.probabilities, hot.probabilities, atol=1e-4)


def _sample(families: dict, name: str, **labels: str) -> float:
    family = families.get(name.removesuffix("_total"), [])
    return sum(s.value for s in family if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


async def test_classify_with_an_unknown_task_or_a_model_beside_it_is_refused(acme: EarlyExitClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await acme.classify_task(["fine"], "never-adapted")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    request = pb.ClassifyRequest(texts=["fine"], task="reviews", model="rotten_tomatoes")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await acme.call(acme._stub.Classify, request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _worker_pid(models_dir: Path, job: str) -> int:
    record = json.loads((models_dir / "adapter-jobs" / job / "job.json").read_text())
    return int(record["worker"].rsplit(":", 1)[1])


async def test_an_adapt_job_survives_the_loss_of_its_worker_and_service(
    earlyexit_models_dir: Path, token_file: Path, tmp_path: Path
) -> None:
    # A store of its own: the module's service would otherwise take the orphaned job over.
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "earlyexit").symlink_to(earlyexit_models_dir / "earlyexit")
    flags = service_flags(models_dir, token_file)
    with service_process("earlyexit", flags) as first:
        async with EarlyExitClient(first.address, timeout_s=60, token=TOKENS["acme"]) as client:
            operation = await client.adapt(sentiment_request("survivor", count=400))
            deadline = time.monotonic() + 300
            while operation.state != pb.OPERATION_STATE_RUNNING or operation.progress == 0:
                assert time.monotonic() < deadline, operation
                await asyncio.sleep(0.2)
                operation = await client.get_operation(operation.id)
        # The replica is lost: its worker dies without a word, then the service goes.
        os.kill(_worker_pid(models_dir, operation.id), signal.SIGKILL)
    with service_process("earlyexit", flags) as second:
        async with EarlyExitClient(second.address, timeout_s=60, token=TOKENS["acme"]) as client:
            done = await finished(client, await client.get_operation(operation.id))
            assert done.state == pb.OPERATION_STATE_SUCCEEDED, done.error
            assert done.attempts == 2
            response = await client.classify_task(["a warm and funny film"], "survivor")
            assert response.model_version == done.adapter_version


async def test_cancelling_a_running_job_stops_it_without_publishing(acme: EarlyExitClient, adapt_models_dir: Path) -> None:
    operation = await acme.adapt(sentiment_request("cancelled", count=2000))
    deadline = time.monotonic() + 120
    while operation.state != pb.OPERATION_STATE_RUNNING:
        assert time.monotonic() < deadline, operation
        await asyncio.sleep(0.2)
        operation = await acme.get_operation(operation.id)
    await acme.cancel_operation(operation.id)
    done = await finished(acme, operation)
    assert done.state == pb.OPERATION_STATE_CANCELLED and not done.adapter_version
    assert not (adapt_models_dir / "adapters" / "acme.cancelled").exists()
