"""Export the frozen base model as the adapters' shared backbone: embeddings and one graph per
layer, so that a tenant's prompt can enter between any two layers. Published once per base
model; every adapter names the backbone version it was trained on."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from services.common.base_model import BASE_MODEL_NAME, source_model_dir
from services.common.model_versions import ModelVersions
from services.earlyexit.backends.torch_model import key_bias_from_mask, load_base_encoder
from services.earlyexit.core.adapters import (
    EMBEDDINGS_GRAPH,
    LORA_INPUTS,
    MANIFEST,
    BackboneManifest,
    StoredBackbone,
    backbones_root,
    layer_graph,
    lora_layer_graph,
    write_json,
)
from services.earlyexit.offline.train import MAX_TOKENS, PARITY_TOLERANCE, _export

#: Bumped whenever what the backbone exports changes.
BACKBONE_REVISION = 2  # 2: LoRA layer graphs


class _Layer(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.layer(hidden, key_bias_from_mask(attention_mask))


class _LoraLayer(_Layer):
    """The layer with each row's own low-rank query and value updates as inputs."""

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor, *row_lora: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.layer(hidden, key_bias_from_mask(attention_mask), row_lora=row_lora)


def _export_lora_layer(layer: nn.Module, path: Path, hidden: torch.Tensor, mask: torch.Tensor) -> float:
    """Export the LoRA form of ``layer``; returns |ONNX - PyTorch| on random per-row updates."""
    import onnxruntime as ort

    generator = torch.Generator().manual_seed(0)
    rows, width = hidden.shape[0], hidden.shape[2]
    rank = 4
    updates = [
        torch.randn((rows, width, rank) if name.endswith("_a") else (rows, rank, width), generator=generator) * 0.05
        for name in LORA_INPUTS
    ]
    module = _LoraLayer(layer).eval()
    dynamic = {"hidden_in": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    dynamic |= {name: {0: "batch", 1 if name.endswith("_b") else 2: "rank"} for name in LORA_INPUTS}
    dynamic["hidden_out"] = {0: "batch", 1: "tokens"}
    _export(module, (hidden, mask, *updates), path, ["hidden_in", "attention_mask", *LORA_INPUTS], ["hidden_out"], dynamic)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"hidden_in": hidden.numpy(), "attention_mask": mask.numpy()}
    feeds |= {name: update.numpy() for name, update in zip(LORA_INPUTS, updates, strict=True)}
    (exported,) = session.run(None, feeds)
    return float(np.abs(exported - module(hidden, mask, *updates).numpy()).max())


def backbone_version() -> str:
    digest = hashlib.sha256(f"{BACKBONE_REVISION}:{MAX_TOKENS}".encode())
    with open(source_model_dir() / "model.safetensors", "rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def publish_backbone(models_dir: Path) -> StoredBackbone:
    """The backbone at this base model's version, exported and published if it is not yet."""
    versions = ModelVersions(backbones_root(models_dir))
    version = backbone_version()
    if versions.is_published(BASE_MODEL_NAME, version):
        versions.point(BASE_MODEL_NAME, version)
        return StoredBackbone(versions.path(BASE_MODEL_NAME, version))
    import onnxruntime as ort

    source = source_model_dir()
    encoder = load_base_encoder()
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 2307, 102, 0, 0, 0]])
    mask = (ids > 0).to(torch.int64)
    tokens = {0: "batch", 1: "tokens"}
    worst = 0.0
    with versions.publish(BASE_MODEL_NAME, version) as directory, torch.no_grad():
        hidden = encoder.embeddings(ids)
        _export(encoder.embeddings, (ids,), directory / EMBEDDINGS_GRAPH, ["input_ids"], ["hidden_out"],
                {"input_ids": tokens, "hidden_out": tokens})
        current = hidden.numpy()
        session = ort.InferenceSession(str(directory / EMBEDDINGS_GRAPH), providers=["CPUExecutionProvider"])
        worst = max(worst, float(np.abs(session.run(None, {"input_ids": ids.numpy()})[0] - current).max()))
        for index, layer in enumerate(encoder.layers, start=1):
            module = _Layer(layer).eval()
            path = directory / layer_graph(index)
            _export(module, (hidden, mask), path, ["hidden_in", "attention_mask"], ["hidden_out"],
                    {"hidden_in": tokens, "attention_mask": tokens, "hidden_out": tokens})
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            (exported,) = session.run(None, {"hidden_in": current, "attention_mask": mask.numpy()})
            worst = max(worst, _export_lora_layer(layer, directory / lora_layer_graph(index), hidden, mask))
            hidden = module(hidden, mask)
            worst = max(worst, float(np.abs(exported - hidden.numpy()).max()))
            current = hidden.numpy()
        if worst > PARITY_TOLERANCE:
            raise RuntimeError(f"backbone graphs differ from PyTorch by {worst:.2e} (> {PARITY_TOLERANCE})")
        (directory / "tokenizer.json").write_bytes((source / "tokenizer.json").read_bytes())
        write_json(
            directory / MANIFEST,
            BackboneManifest(
                base_model=BASE_MODEL_NAME,
                version=version,
                num_layers=encoder.depth,
                hidden=encoder.hidden,
                ffn=encoder.layers[0].ffn_in.out_features,
                max_tokens=MAX_TOKENS,
                parameters=sum(p.numel() for p in encoder.parameters()),
            ),
        )
    versions.point(BASE_MODEL_NAME, version)
    return StoredBackbone(versions.path(BASE_MODEL_NAME, version))
