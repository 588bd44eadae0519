"""Explain: word attributions that pick out what decides, the exit trace against Classify, and
the same input validation as Classify, through the real gRPC service on real trained models."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from rosemesh.earlyexit.v1 import earlyexit_pb2, earlyexit_pb2_grpc
from rosemesh.explain.v1 import explain_pb2

from services.common.base_model import source_model_dir
from services.common.explain import EMPTY_TEXT_STAND_IN, occlude, split_words
from services.common.tokens import TextEncoder
from services.earlyexit.backends.torch_explain import TorchAttributor
from services.earlyexit.backends.torch_model import Encoder, MultiExitClassifier
from services.earlyexit.client import EarlyExitClient
from services.supervisor import RunningService, service_process
from tests.conftest import EARLYEXIT_MODEL as MODEL

HASHEE = "rotten_tomatoes-hashee-frequency"
PLAIN = "rotten_tomatoes-plain"
OCCLUSION = explain_pb2.ATTRIBUTION_METHOD_OCCLUSION
IG = explain_pb2.ATTRIBUTION_METHOD_INTEGRATED_GRADIENTS
ATTENTION = explain_pb2.ATTRIBUTION_METHOD_ATTENTION


def encoder() -> TextEncoder:
    return TextEncoder(source_model_dir() / "tokenizer.json", 64)


def test_words_follow_the_tokenizer_and_cut_cleanly() -> None:
    words = split_words(encoder().tokenizer, "Unbelievably dull, isn't it?")
    assert [words.word(i) for i in range(len(words))] == ["Unbelievably", "dull", ",", "isn", "'", "t", "it", "?"]
    assert words.without({1, 2}) == "Unbelievably isn't it?"
    assert words.only({0, 1}) == "Unbelievably dull"
    assert words.without(set(range(len(words)))) == EMPTY_TEXT_STAND_IN
    # "Unbelievably" is several word pieces; their scores add up into the one word.
    pieces = np.arange(len(words.piece_words), dtype=np.float64)
    summed = words.sum_pieces(pieces)
    assert summed.sum() == pieces[words.piece_words >= 0].sum() and summed[0] > pieces[1]


async def test_occlusion_picks_out_the_deciding_word() -> None:
    """A hand-built classifier that says "negative" exactly when the text holds "awful"."""

    async def probabilities(texts: list[str]) -> np.ndarray:
        return np.array([[0.1, 0.9] if "awful" in text.split() else [0.8, 0.2] for text in texts])

    words = split_words(encoder().tokenizer, "the plot was awful but the cast tried hard")
    ((scores,),) = await occlude([words], [np.array([0.1, 0.9])], [[1]], probabilities)
    assert words.word(int(np.argmax(scores.scores))) == "awful"
    assert scores.scores.max() == pytest.approx(0.7) and np.allclose(np.delete(scores.scores, 3), 0.0)


def hand_built_model(deciding_id: int) -> MultiExitClassifier:
    """A plain classifier whose layers pass their input through (attention and feed-forward
    outputs zeroed) and whose head reads one direction that only ``deciding_id``'s embedding has."""
    config = json.loads((source_model_dir() / "config.json").read_text())
    model = MultiExitClassifier(Encoder(config), num_labels=2, every_layer=False)
    hidden = config["hidden_size"]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        embeddings = model.encoder.embeddings
        embeddings.word.weight.normal_(0, 1, generator=generator)
        embeddings.word.weight[:, 0] = 0.0  # no other token carries the deciding direction
        embeddings.word.weight[deciding_id, 0] = 30.0
        for norm in [embeddings.norm, *(n for layer in model.encoder.layers for n in (layer.attention_norm, layer.ffn_norm))]:
            norm.weight.fill_(1.0)
        head = model.heads[0]
        head.pooler.weight.copy_(torch.eye(hidden))
        head.classifier.weight[1, 0] = 4.0
    return model


def test_integrated_gradients_pick_out_the_deciding_token() -> None:
    tokens = encoder()
    deciding = tokens.tokenizer.token_to_id("awful")
    attributor = TorchAttributor(hand_built_model(deciding))
    text = "the plot was awful but the cast tried hard"
    words = split_words(tokens.tokenizer, text)
    ids = tokens.encode([text])[0].ids
    pieces, delta = attributor.integrated_gradients(ids, exit_layer=6, target=1, steps=64)
    scores = words.sum_pieces(pieces)
    assert words.word(int(np.argmax(scores))) == "awful"
    assert scores[3] > 5 * np.abs(np.delete(scores, 3)).max()
    assert delta < 0.05
    attention = words.sum_pieces(attributor.attention(ids, exit_layer=6))
    assert attention.shape == (len(words),) and np.all(attention >= 0)


# --- through the service -------------------------------------------------------------------


@pytest.fixture(scope="module")
def explain_service(earlyexit_models_dir: Path) -> Iterator[RunningService]:
    flags = ["--models-dir", str(earlyexit_models_dir), "--no-train-default", "--adapt-workers", "0"]
    with service_process("earlyexit", flags) as service:
        yield service


@pytest.fixture
async def stub(explain_service: RunningService) -> AsyncIterator:
    async with EarlyExitClient(explain_service.address, timeout_s=120) as client:
        yield client.stub(earlyexit_pb2_grpc.EarlyExitServiceStub)


TEXTS = ["a gorgeous, moving film with a great cast", "dull and lifeless, a waste of two hours", "it was fine"]


def dynamic(threshold: float) -> earlyexit_pb2.ExitPolicy:
    return earlyexit_pb2.ExitPolicy(mode=earlyexit_pb2.EXIT_MODE_DYNAMIC, entropy_threshold=threshold)


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.68])
async def test_the_exit_trace_matches_the_layer_classify_reports(stub, threshold: float) -> None:
    policy = dynamic(threshold)
    classified = await stub.Classify(earlyexit_pb2.ClassifyRequest(texts=TEXTS, model=MODEL, policy=policy))
    request = earlyexit_pb2.ExplainRequest(
        texts=TEXTS, model=MODEL, policy=policy, options=explain_pb2.ExplainOptions(methods=[OCCLUSION])
    )
    explained = await stub.Explain(request)
    assert explained.policy.entropy_threshold == pytest.approx(threshold)
    for result, explanation in zip(classified.results, explained.explanations, strict=True):
        trace = explanation.exit_trace
        assert explanation.classification.exit_layer == result.exit_layer == trace.exit_layer
        assert explanation.classification.label == result.label
        assert [step.layer for step in trace.layers] == [1, 2, 3, 4, 5, 6]
        stopped = trace.layers[trace.exit_layer - 1]
        assert stopped.label == result.label
        # Every layer before the exit failed the rule; the exit passed it or is the last layer.
        assert all(step.entropy >= threshold for step in trace.layers[: trace.exit_layer - 1])
        assert stopped.entropy < threshold or trace.exit_layer == 6
        assert trace.rule.startswith("entropy") == (stopped.entropy < threshold)


async def test_patience_and_static_traces_name_their_rule(stub) -> None:
    patience = earlyexit_pb2.ExitPolicy(mode=earlyexit_pb2.EXIT_MODE_PATIENCE, patience=2)
    classified = await stub.Classify(earlyexit_pb2.ClassifyRequest(texts=TEXTS, model=MODEL, policy=patience))
    explained = await stub.Explain(
        earlyexit_pb2.ExplainRequest(texts=TEXTS, model=MODEL, policy=patience, options=explain_pb2.ExplainOptions(methods=[OCCLUSION]))
    )
    for result, explanation in zip(classified.results, explained.explanations, strict=True):
        trace = explanation.exit_trace
        assert trace.exit_layer == result.exit_layer
        assert trace.layers[trace.exit_layer - 1].streak >= 2 or trace.exit_layer == 6
    static = earlyexit_pb2.ExitPolicy(mode=earlyexit_pb2.EXIT_MODE_STATIC, static_layer=3)
    explained = await stub.Explain(earlyexit_pb2.ExplainRequest(texts=TEXTS[:1], model=MODEL, policy=static))
    assert explained.explanations[0].exit_trace.exit_layer == 3 and "static" in explained.explanations[0].exit_trace.rule


@pytest.mark.parametrize("model", [MODEL, PLAIN, HASHEE])
async def test_every_kind_explains_by_occlusion_and_integrated_gradients(stub, model: str) -> None:
    text = TEXTS[1]
    explained = await stub.Explain(earlyexit_pb2.ExplainRequest(texts=[text], model=model))
    (explanation,) = explained.explanations
    assert [a.method for a in explanation.attributions] == [OCCLUSION, IG]
    for attribution in explanation.attributions:
        assert attribution.target == explanation.classification.label
        assert [w.word for w in attribution.words] == [text[w.start : w.end] for w in attribution.words]
        assert "lifeless" in [w.word for w in attribution.words]
        assert any(w.score != 0 for w in attribution.words)
    occlusion, gradients = explanation.attributions
    assert gradients.HasField("convergence_delta") and not occlusion.HasField("convergence_delta")
    if model != MODEL:
        assert len(explanation.exit_trace.layers) == 1 and explanation.exit_trace.exit_layer == 6


async def test_attention_and_a_chosen_target_are_explained(stub) -> None:
    options = explain_pb2.ExplainOptions(methods=[ATTENTION, OCCLUSION], target_index=0, steps=8)
    explained = await stub.Explain(earlyexit_pb2.ExplainRequest(texts=TEXTS[:2], model=PLAIN, options=options))
    for explanation in explained.explanations:
        assert [a.method for a in explanation.attributions] == [ATTENTION, OCCLUSION]
        assert {a.target for a in explanation.attributions} == {"fresh"}


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (earlyexit_pb2.ExplainRequest(), "texts"),
        (earlyexit_pb2.ExplainRequest(texts=["fine", "  "]), "texts[1]"),
        (earlyexit_pb2.ExplainRequest(texts=["x" * 20_001]), "texts[0]"),
        (earlyexit_pb2.ExplainRequest(texts=["fine"] * 17), "texts"),
        (earlyexit_pb2.ExplainRequest(texts=["fine"], model="no-such-model"), "model"),
        (earlyexit_pb2.ExplainRequest(texts=["fine"], options=explain_pb2.ExplainOptions(steps=1000)), "options.steps"),
        (earlyexit_pb2.ExplainRequest(texts=["fine"], options=explain_pb2.ExplainOptions(target_index=2)), "options.target_index"),
        (earlyexit_pb2.ExplainRequest(texts=["fine"], options=explain_pb2.ExplainOptions(methods=[0])), "options.methods"),
        (earlyexit_pb2.ExplainRequest(texts=["fine"], model=MODEL, policy=dynamic(5.0)), "policy.entropy_threshold"),
        (earlyexit_pb2.ExplainRequest(texts=["fine"], task="intents", model=MODEL), "model"),
    ],
)
async def test_explain_validates_its_input_like_classify(stub, request_, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Explain(request_)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details()
