"""The PyTorch models: faithful to BERT, HashEE respects the padding mask, gradient equilibrium."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from services.common.base_model import source_model_dir
from services.common.tokens import TextEncoder
from services.earlyexit.backends.torch_model import (
    Encoder,
    HashEEClassifier,
    MultiExitClassifier,
    _RescaleGradient,
    key_bias_from_mask,
)
from services.earlyexit.offline.train import MAX_TOKENS, _tensors

SENTENCES = [
    "A gorgeous, witty, seductive movie.",
    "The plot is nothing but boilerplate clichés from start to finish, and the script assumes that not only "
    "would subtlety be lost on the target audience, but that it's also too stupid to realize that they've "
    "already seen this exact same movie a hundred times.",
    "Bad.",
    "It's a charming and often affecting journey.",
]


@pytest.fixture(scope="module")
def encoder_config() -> dict:
    return json.loads((source_model_dir() / "config.json").read_text())


@pytest.fixture(scope="module")
def encoded() -> list:
    return TextEncoder(source_model_dir() / "tokenizer.json", MAX_TOKENS).encode(SENTENCES)


def pretrained(config: dict) -> Encoder:
    encoder = Encoder(config)
    encoder.load_bert(source_model_dir())
    return encoder.eval()


def test_encoder_matches_transformers_bert(encoder_config: dict, encoded: list) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    reference = AutoModel.from_pretrained(str(source_model_dir())).eval()
    ids, mask = _tensors(encoded, list(range(len(encoded))))
    encoder = pretrained(encoder_config)
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        hidden, bias = encoder.embeddings(ids), key_bias_from_mask(mask)
        for layer in encoder.layers:
            hidden = layer(hidden, bias)
    real = mask.bool()
    assert float((hidden - expected)[real].abs().max()) < 1e-4


def test_hashee_padding_changes_nothing(encoder_config: dict, encoded: list) -> None:
    torch.manual_seed(0)
    table = torch.from_numpy(np.random.default_rng(0).integers(1, 7, encoder_config["vocab_size"]))
    model = HashEEClassifier(pretrained(encoder_config), num_labels=2, exit_table=table).eval()
    batch_ids, batch_mask = _tensors(encoded, list(range(len(encoded))))
    with torch.no_grad():
        batched = model(batch_ids, batch_mask)
        for row in range(len(encoded)):
            ids, mask = _tensors(encoded, [row])
            alone = model(ids, mask)
            # Extra padding beyond the batch's own must change nothing either.
            padded = model(torch.nn.functional.pad(ids, (0, 7)), torch.nn.functional.pad(mask, (0, 7)))
            assert torch.allclose(alone, batched[row : row + 1], atol=1e-5)
            assert torch.allclose(alone, padded, atol=1e-5)


def test_hashee_exited_tokens_stop_changing(encoder_config: dict, encoded: list) -> None:
    """A token hashed to layer 1 keeps its layer-1 state: the top equals the state after layer 1."""
    table = torch.full((encoder_config["vocab_size"],), 6, dtype=torch.int64)
    ids, mask = _tensors(encoded, [0])
    frozen = ids[0, 3]
    table[frozen] = 1
    model = HashEEClassifier(pretrained(encoder_config), 2, table).eval()
    captured = []
    hook = model.encoder.layers[1].register_forward_hook(
        lambda _m, args, _out: captured.append(args[0].clone())
    )
    last = []
    hook_top = model.encoder.layers[5].register_forward_hook(lambda _m, _a, out: last.append(out.clone()))
    with torch.no_grad():
        model(ids, mask)
    hook.remove()
    hook_top.remove()
    after_layer_one = captured[0][0, 3]
    assert torch.equal(last[0][0, 3], after_layer_one)
    assert not torch.equal(last[0][0, 2], captured[0][0, 2])  # an active token kept computing


def test_gradient_rescale_scales_only_the_backward_pass() -> None:
    x = torch.ones(3, requires_grad=True)
    y = _RescaleGradient.apply(x, 0.25)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.full((3,), 0.25))


def test_gradient_equilibrium_balances_layer_gradients(encoder_config: dict, encoded: list) -> None:
    """With equilibrium, the first layer's gradient is the mean of the exits' gradients, not their sum."""
    ids, mask = _tensors(encoded, list(range(len(encoded))))

    def first_layer_grad_norm(train_mode: bool) -> float:
        torch.manual_seed(0)
        model = MultiExitClassifier(pretrained(encoder_config), 2)
        model.train(train_mode)
        for head in model.heads:
            head.dropout.p = 0.0
        sum(logits.sum() for logits in model(ids, mask)).backward()
        return float(model.encoder.layers[0].ffn_out.weight.grad.norm())

    balanced, summed = first_layer_grad_norm(True), first_layer_grad_norm(False)
    assert balanced < summed / 2
