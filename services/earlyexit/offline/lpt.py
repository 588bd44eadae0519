"""Late Prompt Tuning (Liu et al., Findings of EMNLP 2022) on the frozen MiniLM backbone.

The backbone never changes. Before layer ``insertion_layer`` a small generator reads the mean
of the hidden states and writes ``prompt_length`` prompt vectors, which are appended to the
sequence for the layers above; a head reads the mean of the real tokens at the top. Only the
generator and the head train, so no gradient flows below the insertion layer, and the frozen
layers' outputs are computed once per example and cached on disk.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from services.common.tokens import EncodedText, pad_batch
from services.earlyexit.backends.torch_model import Encoder, ExitHead, key_bias_from_mask, mean_pool
from services.earlyexit.offline.adapter_training import TrainingReport, train_adapter


@dataclass(frozen=True)
class LptConfig:
    """Defaults chosen on rotten_tomatoes' dev split (README, "Tenant adapters"): insertion
    layers 2, 3 and 4 scored within 0.3 points of each other, so the cheapest, 4, was taken;
    16 prompt vectors and a learning rate of 1e-2 scored lower."""

    #: 1-based layer the prompt enters before; the layers below it run once, shared by tenants.
    insertion_layer: int = 4
    prompt_length: int = 8
    #: Width of the generator's bottleneck.
    generator_size: int = 64
    #: As the plain model trains, so that the two are compared on the same epochs.
    epochs: float = 2.0
    batch_size: int = 32
    lr: float = 3e-3
    warmup: float = 0.06
    seed: int = 0


class PromptGenerator(nn.Module):
    """Instance-dependent prompt: a learned static prompt plus an MLP of the pooled hidden state."""

    def __init__(self, hidden: int, prompt_length: int, size: int) -> None:
        super().__init__()
        self.prompt_length = prompt_length
        self.static = nn.Parameter(torch.randn(prompt_length, hidden) * 0.02)
        self.down = nn.Linear(hidden, size)
        self.up = nn.Linear(size, prompt_length * hidden)
        nn.init.zeros_(self.up.weight)  # starts as the static prompt alone
        nn.init.zeros_(self.up.bias)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        generated = self.up(torch.tanh(self.down(pooled))).view(len(pooled), self.prompt_length, -1)
        return generated + self.static


class LatePromptClassifier(nn.Module):
    def __init__(self, encoder: Encoder, num_labels: int, config: LptConfig) -> None:
        super().__init__()
        if not 2 <= config.insertion_layer <= encoder.depth:
            raise ValueError(f"insertion_layer must be between 2 and {encoder.depth}, got {config.insertion_layer}")
        self.encoder = encoder
        self.insertion_layer = config.insertion_layer
        self.generator = PromptGenerator(encoder.hidden, config.prompt_length, config.generator_size)
        self.head = ExitHead(encoder.hidden, num_labels)
        for parameter in encoder.parameters():
            parameter.requires_grad_(False)

    def lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The frozen layers below the insertion point: the same for every tenant."""
        key_bias = key_bias_from_mask(attention_mask)
        hidden = self.encoder.embeddings(input_ids)
        for layer in self.encoder.layers[: self.insertion_layer - 1]:
            hidden = layer(hidden, key_bias)
        return hidden

    def upper(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Prompted frozen layers from the insertion point, then the head: logits."""
        prompt = self.generator(mean_pool(hidden, attention_mask))
        tokens = hidden.shape[1]
        hidden = torch.cat([hidden, prompt], dim=1)
        extended = torch.cat([attention_mask, attention_mask.new_ones(prompt.shape[:2])], dim=1)
        key_bias = key_bias_from_mask(extended)
        for layer in self.encoder.layers[self.insertion_layer - 1 :]:
            hidden = layer(hidden, key_bias)
        return self.head(hidden[:, :tokens], attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            hidden = self.lower(input_ids, attention_mask)
        return self.upper(hidden, attention_mask)

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


class HiddenCache:
    """The frozen lower layers' output for every training example, float16 in a file, read one
    batch at a time: the cache costs disk and page cache, not the trainer's memory."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "lower-hidden.f16"
        self.offsets: list[int] = []
        self.lengths: list[int] = []
        self.hidden = 0

    def fill(
        self,
        model: LatePromptClassifier,
        encoded: Sequence[EncodedText],
        batch_size: int,
        advance: Callable[[int], None],
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.hidden = model.encoder.hidden
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
        self.offsets = [0] * len(encoded)
        self.lengths = [len(e.ids) for e in encoded]
        with open(self.path, "wb") as out, torch.no_grad():
            position = 0
            for start in range(0, len(order), batch_size):
                if should_stop():
                    return
                rows = order[start : start + batch_size]
                ids, mask = pad_batch([encoded[i] for i in rows])
                hidden = model.lower(torch.from_numpy(ids), torch.from_numpy(mask)).numpy().astype(np.float16)
                for row, index in enumerate(rows):
                    block = np.ascontiguousarray(hidden[row, : self.lengths[index]])
                    self.offsets[index] = position
                    out.write(block.tobytes())
                    position += block.nbytes
                advance(len(rows))

    def batch(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(self.lengths[i] for i in rows)
        hidden = np.zeros((len(rows), width, self.hidden), dtype=np.float32)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        with open(self.path, "rb") as source:
            for row, index in enumerate(rows):
                length = self.lengths[index]
                source.seek(self.offsets[index])
                block = np.frombuffer(source.read(length * self.hidden * 2), dtype=np.float16)
                hidden[row, :length] = block.reshape(length, self.hidden)
                mask[row, :length] = 1
        return torch.from_numpy(hidden), torch.from_numpy(mask)


def train_late_prompt(
    model: LatePromptClassifier,
    encoded: Sequence[EncodedText],
    labels: Sequence[int],
    config: LptConfig,
    progress: Callable[[str, int, int], None] = lambda what, done, total: None,
    should_stop: Callable[[], bool] = lambda: False,
    on_epoch: Callable[[int], None] = lambda epoch: None,
) -> TrainingReport:
    """Fill the cache, then train the generator and the head on it. ``progress(what, done,
    total)`` is called as it goes, ``on_epoch(epoch)`` after each whole epoch, and
    ``should_stop`` between steps (cancellation)."""
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rosemesh-lpt-") as scratch:
        cache = HiddenCache(Path(scratch))
        filled = 0

        def advance(count: int) -> None:
            nonlocal filled
            filled += count
            progress("caching the frozen layers", filled, len(encoded))

        model.eval()
        cache.fill(model, encoded, 64, advance, should_stop)
        target = torch.tensor(list(labels))

        def batch_loss(rows: list[int]) -> torch.Tensor:
            hidden, mask = cache.batch(rows)
            return F.cross_entropy(model.upper(hidden, mask), target[rows])

        report = train_adapter(model, model.trainable(), cache.lengths, config, batch_loss, progress, should_stop, on_epoch)
    return replace(report, seconds=time.perf_counter() - began)  # the cache's filling included


def predict(model: LatePromptClassifier, encoded: Sequence[EncodedText], batch_size: int = 64) -> np.ndarray:
    """Logits for every text, in order."""
    model.eval()
    rows = []
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            ids, mask = pad_batch(list(encoded[start : start + batch_size]))
            rows.append(model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy())
    return np.concatenate(rows)


def adapter_weights(model: LatePromptClassifier) -> dict[str, np.ndarray]:
    """What a tenant's bundle stores: the generator and the head, nothing of the backbone."""
    return {
        name: parameter.detach().numpy().copy()
        for name, parameter in model.named_parameters()
        if not name.startswith("encoder.")
    }


def set_threads() -> None:
    torch.set_num_threads(os.cpu_count() or 1)
