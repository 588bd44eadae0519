"""Integrated gradients (captum) and attention weights on a published model's PyTorch weights."""

from __future__ import annotations

import math
import threading

import numpy as np
import torch
from torch import nn

from services.earlyexit.backends.torch_model import (
    Encoder,
    HashEEClassifier,
    MultiExitClassifier,
    key_bias_from_mask,
    load_classifier,
    mean_pool,
)
from services.earlyexit.core.adapters import TenantAdapter
from services.earlyexit.core.bundle import StoredModel

PAD_ID = 0


class AdapterModule(nn.Module):
    """A served tenant adapter over the frozen base model in PyTorch, from the very arrays the
    tenant path serves, so that gradients explain what Classify answers."""

    def __init__(self, encoder: Encoder, adapter: TenantAdapter) -> None:
        super().__init__()
        self.encoder = encoder.eval()
        self.adapter = adapter

    def _lora(self, layer: int) -> tuple[torch.Tensor, ...] | None:
        if not self.adapter.rank:
            return None
        return tuple(_tensor(part) for part in self.adapter.lora(layer))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        adapter = self.adapter
        hidden = self.encoder.embeddings(input_ids)
        tokens, mask = hidden.shape[1], attention_mask
        for depth, layer in enumerate(self.encoder.layers, start=1):
            if depth == adapter.insertion_layer:
                pooled = mean_pool(hidden, attention_mask)
                down = torch.tanh(pooled @ _tensor(adapter.down_w) + _tensor(adapter.down_b))
                prompt = (down @ _tensor(adapter.up_w) + _tensor(adapter.up_b)).view(len(hidden), adapter.prompt_length, -1)
                hidden = torch.cat([hidden, prompt + _tensor(adapter.static)], dim=1)
                mask = torch.cat([attention_mask, attention_mask.new_ones(prompt.shape[:2])], dim=1)
            hidden = layer(hidden, key_bias_from_mask(mask), row_lora=self._lora(depth))
        summary = torch.tanh(mean_pool(hidden[:, :tokens], attention_mask) @ _tensor(adapter.pooler_w) + _tensor(adapter.pooler_b))
        return summary @ _tensor(adapter.classifier_w) + _tensor(adapter.classifier_b)


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array, dtype=np.float32))


class TorchAttributor:
    """One model's differentiable copy; calls are serialised (captum hooks the shared module)."""

    def __init__(
        self, model: MultiExitClassifier | HashEEClassifier | AdapterModule, lock: threading.Lock | None = None
    ) -> None:
        self.model = model.eval()
        self._lock = lock or threading.Lock()

    @classmethod
    def from_stored(cls, stored: StoredModel) -> TorchAttributor:
        return cls(load_classifier(stored))

    def _exit_logits(self, ids: torch.Tensor, mask: torch.Tensor, exit_layer: int) -> torch.Tensor:
        model = self.model
        if isinstance(model, MultiExitClassifier):
            exits = model(ids, mask)
            return exits[model.exit_layers.index(exit_layer)] if len(exits) > 1 else exits[-1]
        return model(ids, mask)

    def integrated_gradients(self, ids: np.ndarray, exit_layer: int, target: int, steps: int) -> tuple[np.ndarray, float]:
        from captum.attr import LayerIntegratedGradients

        inputs = torch.as_tensor(ids, dtype=torch.int64)[None, :]
        mask = torch.ones_like(inputs)
        special = torch.zeros_like(inputs, dtype=torch.bool)
        special[0, 0] = special[0, -1] = True  # [CLS] and [SEP] stay in the baseline
        baseline = torch.where(special, inputs, torch.full_like(inputs, PAD_ID))

        def probability(batch_ids: torch.Tensor, batch_mask: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self._exit_logits(batch_ids, batch_mask, exit_layer), dim=-1)

        with self._lock:
            method = LayerIntegratedGradients(probability, self.model.encoder.embeddings.word)
            attributions, delta = method.attribute(
                inputs,
                baselines=baseline,
                additional_forward_args=(mask,),
                target=target,
                n_steps=steps,
                internal_batch_size=steps,
                return_convergence_delta=True,
            )
        return attributions.sum(dim=-1)[0].detach().numpy().astype(np.float64), float(delta.abs().item())

    def attention(self, ids: np.ndarray, exit_layer: int) -> np.ndarray:
        model = self.model
        inputs = torch.as_tensor(ids, dtype=torch.int64)[None, :]
        mask = torch.ones_like(inputs)
        layer = model.encoder.layers[exit_layer - 1]
        captured: list[torch.Tensor] = []
        hook = layer.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
        with self._lock, torch.no_grad():
            try:
                self._exit_logits(inputs, mask, exit_layer)
            finally:
                hook.remove()
            hidden = captured[0]  # an adapter's prompt positions come after the tokens
            width = hidden.shape[-1]
            queries, keys = layer._split_heads(layer.query(hidden)), layer._split_heads(layer.key(hidden))
            scores = queries @ keys.transpose(-1, -2) / math.sqrt(width // layer.heads)
            weights = torch.softmax(scores, dim=-1)  # (1, heads, queries, keys); every position is real
        return weights.mean(dim=(0, 1, 2))[: len(ids)].numpy().astype(np.float64)
