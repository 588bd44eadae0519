"""Tokenization, truncation and padding in the embedding core."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
from hypothesis import given
from hypothesis import strategies as st

from services.common.base_model import source_model_dir
from services.common.tokens import EncodedText, TextEncoder, pad_batch
from services.embedding.bundle import GRAPH, MAX_TOKENS, ExportedModel


def test_long_text_is_truncated_and_flagged() -> None:
    encoder = TextEncoder(source_model_dir() / "tokenizer.json", MAX_TOKENS)
    short, long = encoder.encode(["a short review", "word " * 1000])
    assert not short.truncated and len(short.ids) == 5  # [CLS] a short review [SEP]
    assert long.truncated and len(long.ids) == MAX_TOKENS


@given(st.lists(st.integers(1, 40), min_size=1, max_size=12))
def test_pad_batch_keeps_every_token_and_masks_the_rest(lengths: list[int]) -> None:
    encoded = [EncodedText(np.arange(1, n + 1, dtype=np.int64), False) for n in lengths]
    ids, mask = pad_batch(encoded)
    assert ids.shape == mask.shape == (len(lengths), max(lengths))
    assert mask.sum(axis=1).tolist() == lengths
    for row, n in enumerate(lengths):
        assert ids[row, :n].tolist() == list(range(1, n + 1))
        assert not ids[row, n:].any()


def test_the_export_is_the_fused_bert_graph(embedding_model: ExportedModel) -> None:
    """ONNX Runtime's BERT fusions took: one Attention per layer, and the manifest says so (an
    export made before the fusions is redone on the next start)."""
    graph = onnx.load(str(embedding_model.fp32_path), load_external_data=False).graph
    operators = Counter(node.op_type for node in graph.node)
    assert operators["Attention"] == 6 and operators["SkipLayerNormalization"] == 12
    assert json.loads(embedding_model.manifest_path.read_text())["graph"] == GRAPH
