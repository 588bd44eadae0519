"""LoRA adapters on the frozen MiniLM backbone, trained with ``peft``.

``peft`` wraps the chosen projections of every layer with a low-rank update ``x @ A @ B`` scaled
by ``alpha / rank``; only the updates and the head train. What a tenant's bundle stores is each
update's A and its scaled B, which the shared layer graphs take as per-row inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from services.common.tokens import EncodedText, pad_batch
from services.earlyexit.backends.torch_model import Encoder, ExitHead, key_bias_from_mask
from services.earlyexit.core.adapters import LORA_MODULES
from services.earlyexit.offline.adapter_training import TrainingReport, train_adapter


@dataclass(frozen=True)
class LoraTrainConfig:
    rank: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] = LORA_MODULES
    epochs: float = 2.0
    batch_size: int = 32
    lr: float = 1e-3
    warmup: float = 0.06
    seed: int = 0


class LoraClassifier(nn.Module):
    def __init__(self, encoder: Encoder, num_labels: int, config: LoraTrainConfig) -> None:
        super().__init__()
        unserved = sorted(set(config.target_modules) - set(LORA_MODULES))
        if unserved:
            raise ValueError(f"LoRA on {unserved} is not served; adapt {', '.join(LORA_MODULES)}")
        peft_config = LoraConfig(
            r=config.rank, lora_alpha=config.alpha, lora_dropout=0.0, target_modules=list(config.target_modules)
        )
        self.encoder = inject_adapter_in_model(peft_config, encoder)  # freezes all but the updates
        self.head = ExitHead(encoder.hidden, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        key_bias = key_bias_from_mask(attention_mask)
        hidden = self.encoder.embeddings(input_ids)
        for layer in self.encoder.layers:
            hidden = layer(hidden, key_bias)
        return self.head(hidden, attention_mask)

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def train_lora(
    model: LoraClassifier,
    encoded: Sequence[EncodedText],
    labels: Sequence[int],
    config: LoraTrainConfig,
    progress: Callable[[str, int, int], None] = lambda what, done, total: None,
    should_stop: Callable[[], bool] = lambda: False,
    on_epoch: Callable[[int], None] = lambda epoch: None,
) -> TrainingReport:
    target = torch.tensor(list(labels))

    def batch_loss(rows: list[int]) -> torch.Tensor:
        ids, mask = pad_batch([encoded[i] for i in rows])
        return F.cross_entropy(model(torch.from_numpy(ids), torch.from_numpy(mask)), target[rows])

    lengths = [len(e.ids) for e in encoded]
    return train_adapter(model, model.trainable(), lengths, config, batch_loss, progress, should_stop, on_epoch)


def lora_weights(model: LoraClassifier) -> dict[str, np.ndarray]:
    """Each adapted projection's A (in × rank) and scaled B (rank × out), and the head."""
    weights = {}
    for index, layer in enumerate(model.encoder.layers):
        for module in LORA_MODULES:
            wrapped = getattr(layer, module)
            if not hasattr(wrapped, "lora_A"):
                continue
            a = wrapped.lora_A["default"].weight.detach().numpy().T
            b = wrapped.lora_B["default"].weight.detach().numpy().T * wrapped.scaling["default"]
            weights[f"layers.{index + 1}.{module}.a"] = np.ascontiguousarray(a)
            weights[f"layers.{index + 1}.{module}.b"] = np.ascontiguousarray(b)
    for name, parameter in model.head.named_parameters():
        weights[f"head.{name}"] = parameter.detach().numpy().copy()
    return weights
