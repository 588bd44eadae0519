"""PyTorch early-exit classifiers on all-MiniLM-L6-v2: ElasticBERT multi-exit and HashEE.

The encoder layer is written out here rather than called through transformers, so that one
layer can be exported on its own as a segment, and so that HashEE can run its query, output
and feed-forward projections on the active tokens only. Weights come from the pretrained
BERT checkpoint; only the exit heads start from scratch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kernels import dispatch as kernels
from kernels.active_attention import LayerWeights
from services.earlyexit.core.bundle import ENCODER_CONFIG, TORCH_WEIGHTS, StoredModel
from services.earlyexit.core.policy import ModelKind

# Added to attention scores at padded keys: exp() underflows to exactly 0 in float32.
_MASKED = -1e9


class Embeddings(nn.Module):
    def __init__(self, vocab: int, positions: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab, hidden)
        self.position = nn.Embedding(positions, hidden)
        self.token_type = nn.Embedding(2, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        summed = self.word(input_ids) + self.position(positions) + self.token_type.weight[0]
        return self.norm(summed)


class EncoderLayer(LayerWeights):
    """One BERT layer. With ``active`` (flat token indices), only those tokens are updated:
    they alone compute queries, the attention output and the feed-forward, while keys and
    values still cover every token, so exited tokens stay visible to the rest."""

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        return x.view(batch, length, self.heads, hidden // self.heads).transpose(1, 2)

    def forward(
        self,
        hidden: torch.Tensor,
        key_bias: torch.Tensor,
        active: torch.Tensor | None = None,
        row_lora: tuple[torch.Tensor, ...] | None = None,
    ) -> torch.Tensor:
        """``row_lora``, (query A, query B, value A, value B) with a leading batch axis, adds each
        row's own low-rank update ``x @ A @ B`` to its query and value projections: many tenants'
        LoRA adapters on the shared weights in one batch."""
        if active is not None and not torch.is_grad_enabled() and not torch.jit.is_tracing():
            return kernels.active_layer(self, hidden, key_bias, active)  # inference: the fused kernel
        # Training and ONNX export: differentiable, and traceable with a dynamic active set.
        batch, length, width = hidden.shape
        value_states = self.value(hidden)
        if row_lora is not None:
            value_states = value_states + hidden @ row_lora[2] @ row_lora[3]
        keys = self._split_heads(self.key(hidden))
        values = self._split_heads(value_states)
        if active is None:
            tokens = hidden
            queries = self.query(hidden)
            if row_lora is not None:
                queries = queries + hidden @ row_lora[0] @ row_lora[1]
        else:
            flat = hidden.reshape(batch * length, width)
            tokens = flat.index_select(0, active)
            queries = (
                torch.zeros_like(flat).index_copy(0, active, self.query(tokens)).view(batch, length, width)
            )
        scores = self._split_heads(queries) @ keys.transpose(-1, -2) / math.sqrt(width // self.heads)
        context = (
            (torch.softmax(scores + key_bias, dim=-1) @ values).transpose(1, 2).reshape(batch, length, width)
        )
        if active is not None:
            context = context.reshape(batch * length, width).index_select(0, active)
        attended = self.attention_norm(self.attention_out(context) + tokens)
        updated = self.ffn_norm(self.ffn_out(F.gelu(self.ffn_in(attended))) + attended)
        if active is None:
            return updated
        return flat.index_copy(0, active, updated).view(batch, length, width)


class ExitHead(nn.Module):
    """ElasticBERT's exit: a tanh pooler, then a linear classifier. It reads the mean of the
    real tokens (``mean``, how MiniLM was trained to summarise a sentence, which shallow exits
    need) or the [CLS] token (``cls``, HashEE's single classifier at the top)."""

    def __init__(self, hidden: int, num_labels: int, pooling: str = "mean", dropout: float = 0.1) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"unknown pooling {pooling!r}; expected 'mean' or 'cls'")
        self.pooling = pooling
        self.pooler = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_labels)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        summary = hidden[:, 0] if self.pooling == "cls" else mean_pool(hidden, attention_mask)
        return self.classifier(self.dropout(torch.tanh(self.pooler(summary))))


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of each row's real tokens."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1)


def key_bias_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, tokens) 1/0 mask to an additive (batch, 1, 1, tokens) bias on attention scores."""
    return ((1.0 - attention_mask.to(torch.float32)) * _MASKED)[:, None, None, :]


class _RescaleGradient(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``scale`` on the way back."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale  # type: ignore[attr-defined]
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None  # type: ignore[attr-defined]


class Encoder(nn.Module):
    """Embeddings and layers, loaded from a BERT checkpoint folder."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        eps = config.get("layer_norm_eps", 1e-12)
        hidden = config["hidden_size"]
        self.hidden = hidden
        self.embeddings = Embeddings(config["vocab_size"], config["max_position_embeddings"], hidden, eps)
        self.layers = nn.ModuleList(
            EncoderLayer(hidden, config["num_attention_heads"], config["intermediate_size"], eps)
            for _ in range(config["num_hidden_layers"])
        )

    @property
    def depth(self) -> int:
        return len(self.layers)

    def load_bert(self, checkpoint_dir: Path) -> None:
        """Copy a BertModel's weights from ``model.safetensors`` into this encoder."""
        from safetensors.torch import load_file

        weights = {
            key.removeprefix("bert."): value
            for key, value in load_file(checkpoint_dir / "model.safetensors").items()
        }
        mapping = {
            "embeddings.word.weight": "embeddings.word_embeddings.weight",
            "embeddings.position.weight": "embeddings.position_embeddings.weight",
            "embeddings.token_type.weight": "embeddings.token_type_embeddings.weight",
            "embeddings.norm.weight": "embeddings.LayerNorm.weight",
            "embeddings.norm.bias": "embeddings.LayerNorm.bias",
        }
        per_layer = {
            "query": "attention.self.query",
            "key": "attention.self.key",
            "value": "attention.self.value",
            "attention_out": "attention.output.dense",
            "attention_norm": "attention.output.LayerNorm",
            "ffn_in": "intermediate.dense",
            "ffn_out": "output.dense",
            "ffn_norm": "output.LayerNorm",
        }
        for index in range(self.depth):
            for ours, theirs in per_layer.items():
                for param in ("weight", "bias"):
                    mapping[f"layers.{index}.{ours}.{param}"] = f"encoder.layer.{index}.{theirs}.{param}"
        missing = [theirs for theirs in mapping.values() if theirs not in weights]
        if missing:
            raise ValueError(f"{checkpoint_dir} is not a BERT checkpoint: missing {missing[:3]}")
        self.load_state_dict({ours: weights[theirs] for ours, theirs in mapping.items()})


class MultiExitClassifier(nn.Module):
    """A classifier after every layer (ElasticBERT), or after the last one only (the plain
    fine-tuning baseline, ``every_layer=False``)."""

    def __init__(self, encoder: Encoder, num_labels: int, every_layer: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.exit_layers = list(range(1, encoder.depth + 1)) if every_layer else [encoder.depth]
        self.heads = nn.ModuleList(ExitHead(encoder.hidden, num_labels) for _ in self.exit_layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """Logits at every exit, shallowest first. Training rescales gradients so that each
        layer's share equals the mean over the exits that depend on it (gradient equilibrium)."""
        key_bias = key_bias_from_mask(attention_mask)
        hidden = self.encoder.embeddings(input_ids)
        exits = len(self.exit_layers)
        logits = []
        for depth, layer in enumerate(self.encoder.layers, start=1):
            hidden = layer(hidden, key_bias)
            if depth not in self.exit_layers:
                continue
            remaining = exits - len(logits)  # exits at this layer and above
            to_head, onward = hidden, hidden
            if self.training and exits > 1:
                to_head = _RescaleGradient.apply(hidden, 1.0 / remaining)
                onward = _RescaleGradient.apply(hidden, (remaining - 1) / remaining)
            logits.append(self.heads[len(logits)](to_head, attention_mask))
            hidden = onward
        return logits


class LastExit(nn.Module):
    """A multi-exit classifier's last exit alone: the plain classifier's exported graph."""

    def __init__(self, model: MultiExitClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask)[-1]


class HashEEClassifier(nn.Module):
    """HashEE: each token stops after the layer that ``exit_table[token_id]`` names (1-based);
    its hidden state is then copied upward unchanged. One classifier reads [CLS] at the top."""

    def __init__(self, encoder: Encoder, num_labels: int, exit_table: torch.Tensor) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ExitHead(encoder.hidden, num_labels, pooling="cls")
        self.register_buffer("exit_table", exit_table.to(torch.int64))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        key_bias = key_bias_from_mask(attention_mask)
        token_exit = self.exit_table[input_ids]
        real = attention_mask > 0
        hidden = self.encoder.embeddings(input_ids)
        for depth, layer in enumerate(self.encoder.layers):
            active = ((token_exit > depth) & real).reshape(-1).nonzero().squeeze(1)
            hidden = layer(hidden, key_bias, active)
        return self.head(hidden, attention_mask)


class Segment(nn.Module):
    """One exported step of a multi-exit model: layer ``index`` (0-based) and its exit head.
    The first segment also embeds the token ids."""

    def __init__(self, model: MultiExitClassifier, index: int) -> None:
        super().__init__()
        self.first = index == 0
        self.embeddings = model.encoder.embeddings if self.first else None
        self.layer = model.encoder.layers[index]
        self.head = model.heads[index]

    def forward(
        self, inputs: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.embeddings(inputs) if self.embeddings is not None else inputs
        hidden = self.layer(hidden, key_bias_from_mask(attention_mask))
        return hidden, self.head(hidden, attention_mask)


def load_base_encoder() -> Encoder:
    """The frozen base model every tenant adapter shares, from its package."""
    from services.common.base_model import source_model_dir

    source = source_model_dir()
    encoder = Encoder(json.loads((source / "config.json").read_text()))
    encoder.load_bert(source)
    return encoder.eval()


def load_classifier(stored: StoredModel) -> nn.Module:
    """A published model's PyTorch module from the weights its bundle keeps, in eval mode."""
    from safetensors.torch import load_file

    if not stored.has_torch_weights:
        raise FileNotFoundError(f"{stored.directory} keeps no PyTorch weights (trained before they were kept)")
    manifest = stored.manifest
    encoder = Encoder(json.loads((stored.directory / ENCODER_CONFIG).read_text()))
    if manifest.kind is ModelKind.HASHEE:
        model: nn.Module = HashEEClassifier(encoder, len(manifest.labels), torch.from_numpy(stored.exit_table()))
    else:
        model = MultiExitClassifier(encoder, len(manifest.labels), every_layer=manifest.kind is ModelKind.MULTI_EXIT)
    missing, unexpected = model.load_state_dict(load_file(stored.directory / TORCH_WEIGHTS), strict=False)
    if unexpected or set(missing) - {"exit_table"}:
        raise ValueError(f"{stored.directory}: weights do not fit a {manifest.kind.value} model ({missing or unexpected})")
    return model.eval()
