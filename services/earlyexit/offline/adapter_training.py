"""The training loop both adapter methods share: only the adapter's parameters train."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from services.earlyexit.offline.train import length_bucketed_batches


class AdapterSchedule(Protocol):
    epochs: float
    batch_size: int
    lr: float
    warmup: float
    seed: int


@dataclass(frozen=True)
class TrainingReport:
    seconds: float
    final_loss: float
    steps: int


def train_adapter(
    model: nn.Module,
    trainable: list[nn.Parameter],
    lengths: Sequence[int],
    config: AdapterSchedule,
    batch_loss: Callable[[list[int]], torch.Tensor],
    progress: Callable[[str, int, int], None],
    should_stop: Callable[[], bool],
    on_epoch: Callable[[int], None],
) -> TrainingReport:
    """AdamW with linear warm-up and decay over length-bucketed batches; ``batch_loss(rows)`` is
    the loss of one batch of example indices. ``on_epoch`` runs in eval mode after each epoch
    but the last, which the caller measures once training is done."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    began = time.perf_counter()
    epochs = max(1, int(np.ceil(config.epochs)))
    schedule = [b for _ in range(epochs) for b in length_bucketed_batches(lengths, config.batch_size, rng)]
    schedule = schedule[: max(1, int(len(schedule) * config.epochs / epochs))]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=0.01)
    warmup = max(1, int(len(schedule) * config.warmup))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, max(0.0, (len(schedule) - step) / max(1, len(schedule) - warmup))),
    )
    per_epoch = max(1, len(schedule) // epochs)
    losses: list[float] = []
    model.train()
    for step, rows in enumerate(schedule, start=1):
        if should_stop():
            break
        loss = batch_loss(rows)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        progress("training", step, len(schedule))
        if step % per_epoch == 0 and step < len(schedule):  # the caller measures the end itself
            model.eval()
            on_epoch(step // per_epoch)
            model.train()
    model.eval()
    return TrainingReport(time.perf_counter() - began, float(np.mean(losses[-50:] or [float("nan")])), len(losses))
