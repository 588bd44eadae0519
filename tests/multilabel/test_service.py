"""The multi-label service with real processes: the embedding service, a model trained in the
test on real data (a few seconds), the multi-label service on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from rosemesh.explain.v1 import explain_pb2
from rosemesh.multilabel.v1 import multilabel_pb2

from services.multilabel.client import MultiLabelClient
from services.multilabel.core.bundle import Policy, StoredMultiLabelModel
from services.offline.datasets import toxicity_multilabel
from services.supervisor import RunningService, service_process
from tests.helpers import scrape


@pytest.fixture(scope="module")
def multilabel_service(
    multilabel_trained: tuple[Path, StoredMultiLabelModel], embedding_service: RunningService
) -> Iterator[RunningService]:
    models_dir, _ = multilabel_trained
    flags = [
        "--models-dir",
        str(models_dir),
        "--embedding-target",
        embedding_service.address,
        "--max-texts",
        "16",
    ]
    with service_process("multilabel", [*flags, "--no-train-default"]) as service:
        yield service


@pytest.fixture
async def client(multilabel_service: RunningService) -> AsyncIterator[MultiLabelClient]:
    async with MultiLabelClient(multilabel_service.address, timeout_s=60) as client:
        yield client


def test_training_records_three_policies_with_test_metrics(
    multilabel_trained: tuple[Path, StoredMultiLabelModel],
) -> None:
    manifest = multilabel_trained[1].manifest
    assert manifest.labels == list(toxicity_multilabel().labels)
    assert set(manifest.policies) == set(Policy)
    assert manifest.policies[Policy.FIXED].thresholds == [0.5] * len(manifest.labels)
    for record in manifest.policies.values():
        assert 0 < record.test_metrics.micro_f1 <= 1 and record.test_metrics.example_count == 199


async def test_predict_applies_each_policy_thresholds(
    client: MultiLabelClient, multilabel_trained: tuple[Path, StoredMultiLabelModel]
) -> None:
    texts = [row.text for row in toxicity_multilabel().test[:8]]
    manifest = multilabel_trained[1].manifest
    for policy in Policy:
        response = await client.predict(texts, policy=policy)
        assert response.model == "toxicity" and response.version == manifest.version
        assert len(response.predictions) == len(texts)
        for prediction in response.predictions:
            assert [s.label for s in prediction.scores] == manifest.labels
            assert [s.threshold for s in prediction.scores] == pytest.approx(
                manifest.policies[policy].thresholds
            )
            chosen = {s.label for s in prediction.scores if s.probability >= s.threshold}
            assert set(prediction.labels) == chosen
            probabilities = [s.probability for s in prediction.scores if s.predicted]
            assert [
                dict((s.label, s.probability) for s in prediction.scores)[x] for x in prediction.labels
            ] == sorted(probabilities, reverse=True)


async def test_the_default_policy_is_meta(client: MultiLabelClient) -> None:
    response = await client.predict(["you absolute idiot"])
    assert response.policy == 3


async def test_a_batch_is_embedded_once(client: MultiLabelClient, embedding_service: RunningService) -> None:
    def embed_calls() -> float:
        samples = scrape(embedding_service)["rosemesh_grpc_server_handled"]
        return sum(s.value for s in samples if s.labels["grpc_method"].endswith("/Embed"))

    before = embed_calls()
    await client.predict([f"text number {i}" for i in range(12)])
    assert embed_calls() - before == 1


async def test_list_models_reports_labels_and_metrics(client: MultiLabelClient) -> None:
    (model,) = await client.list_models()
    assert model.name == "toxicity" and model.is_default and len(model.labels) == 7
    assert {p.policy for p in model.policies} == {1, 2, 3}
    assert all(p.test_metrics.example_count == 199 for p in model.policies)


@pytest.mark.parametrize(
    ("texts", "model", "field", "words"),
    [
        (["hello"], "spam-filter", "model", "unknown model 'spam-filter'"),
        (["fine", ""], "", "texts[1]", "empty"),
        ([], "", "texts", "at least one"),
        (["x"] * 17, "", "texts", "limit of 16"),
    ],
)
async def test_bad_requests_get_invalid_argument(
    client: MultiLabelClient, texts: list[str], model: str, field: str, words: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.predict(texts, model=model)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details() and words in caught.value.details()
    assert (await client.predict(["still serving"])).predictions


async def test_an_unknown_version_is_named(client: MultiLabelClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.predict(["hello"], version="1999")
    assert (
        caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "no version '1999'" in caught.value.details()
    )


async def test_explain_attributes_each_predicted_label_by_occlusion(client: MultiLabelClient) -> None:
    texts = [row.text for row in toxicity_multilabel().test[:4]]
    response = await client.explain(multilabel_pb2.ExplainRequest(texts=texts))
    predicted = await client.predict(texts)
    assert response.model == "toxicity" and len(response.explanations) == len(texts)
    for explanation, prediction, text in zip(response.explanations, predicted.predictions, texts, strict=True):
        assert list(explanation.prediction.labels) == list(prediction.labels)
        wanted = list(prediction.labels) or [max(prediction.scores, key=lambda s: s.probability).label]
        assert [a.target for a in explanation.attributions] == wanted
        for attribution in explanation.attributions:
            assert attribution.method == explain_pb2.ATTRIBUTION_METHOD_OCCLUSION
            assert all(text[w.start : w.end] == w.word for w in attribution.words)
            assert any(abs(w.score) > 0 for w in attribution.words)
    chosen = await client.explain(
        multilabel_pb2.ExplainRequest(texts=texts[:1], options=explain_pb2.ExplainOptions(target_index=2))
    )
    assert [a.target_index for a in chosen.explanations[0].attributions] == [2]


@pytest.mark.parametrize(
    ("request_", "code", "field"),
    [
        (multilabel_pb2.ExplainRequest(), grpc.StatusCode.INVALID_ARGUMENT, "texts"),
        (multilabel_pb2.ExplainRequest(texts=["x"] * 17), grpc.StatusCode.INVALID_ARGUMENT, "texts"),
        (multilabel_pb2.ExplainRequest(texts=["x"], model="spam"), grpc.StatusCode.INVALID_ARGUMENT, "model"),
        (
            multilabel_pb2.ExplainRequest(texts=["x"], options=explain_pb2.ExplainOptions(target_index=99)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "options.target_index",
        ),
        (
            multilabel_pb2.ExplainRequest(
                texts=["x"], options=explain_pb2.ExplainOptions(methods=[explain_pb2.ATTRIBUTION_METHOD_INTEGRATED_GRADIENTS])
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "gradient",
        ),
    ],
)
async def test_explain_validates_like_predict(client: MultiLabelClient, request_, code, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.explain(request_)
    assert caught.value.code() == code and field in caught.value.details()
