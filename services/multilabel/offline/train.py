"""`rosemesh train multilabel`: the classifier, its two baselines and the meta-learned policies.

One run, one data set, one set of features (sentence embeddings from the embedding service):
- ``fixed``: the classifier trained with plain binary cross-entropy, a 0.5 threshold per label;
- ``tuned``: the same classifier with per-label thresholds tuned on the dev split;
- ``meta``: Wu, Xiong and Wang (2019). A GRU walks over the labels and, for each, emits a
  training policy (the label's loss weight) and a prediction policy (its threshold), each
  label's decision conditioned on the decisions before it. It is trained by REINFORCE with a
  baseline: every episode trains a classifier with the sampled weights, and the reward is that
  classifier's F1 on the dev split under the sampled thresholds.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import Progress
from torch import nn

from services.adapters.embedding_service import RemoteEmbedder
from services.common.base_model import BASE_MODEL_NAME
from services.common.progress import MirroredProgress, counting_columns
from services.multilabel.core.bundle import (
    MultiLabelManifest,
    Policy,
    PolicyMetrics,
    PolicyRecord,
    StoredMultiLabelModel,
    save_model,
)
from services.multilabel.core.scoring import (
    THRESHOLD_GRID,
    MlpClassifier,
    apply_thresholds,
    f1_scores,
    tune_thresholds,
)
from services.offline.datasets import MultiLabelSplits, toxicity_multilabel

MULTILABEL_DATASETS = {"toxicity": toxicity_multilabel}
#: The training policy's choices for a label's loss weight.
WEIGHT_CHOICES = (0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class ClassifierConfig:
    hidden: int = 64
    epochs: int = 80
    lr: float = 5e-3
    weight_decay: float = 1e-3
    seed: int = 0


@dataclass(frozen=True)
class MetaConfig:
    updates: int = 300
    episodes_per_update: int = 16
    hidden: int = 32
    lr: float = 0.02
    entropy_bonus: float = 0.01
    seed: int = 0


def train_classifier(
    features: np.ndarray, targets: np.ndarray, loss_weights: np.ndarray, config: ClassifierConfig
) -> MlpClassifier:
    """Full-batch Adam on the per-label weighted binary cross-entropy."""
    torch.manual_seed(config.seed)
    x, y = torch.from_numpy(features).float(), torch.from_numpy(targets).float()
    weights = torch.from_numpy(np.asarray(loss_weights, dtype=np.float32))
    model = nn.Sequential(
        nn.Linear(x.shape[1], config.hidden), nn.ReLU(), nn.Linear(config.hidden, y.shape[1])
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    for _ in range(config.epochs):
        optimizer.zero_grad()
        weighted_bce(model(x), y, weights).backward()
        optimizer.step()
    first, _, last = model
    return MlpClassifier(
        first.weight.detach().numpy().T.astype(np.float64),
        first.bias.detach().numpy().astype(np.float64),
        last.weight.detach().numpy().T.astype(np.float64),
        last.bias.detach().numpy().astype(np.float64),
    )


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, label_weights: torch.Tensor) -> torch.Tensor:
    """Mean over examples of Σ_labels weight_label · BCE(example, label)."""
    per_entry = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (per_entry * label_weights[None, :]).sum(dim=1).mean()


@dataclass(frozen=True)
class Episode:
    """One walk over the labels: the action indices and their per-label log-probabilities."""

    weight_actions: torch.Tensor  # (labels,)
    threshold_actions: torch.Tensor  # (labels,)
    weight_log_probs: torch.Tensor  # (labels,)
    threshold_log_probs: torch.Tensor  # (labels,)
    entropy: torch.Tensor  # scalar, summed over every decision


class MetaLearner(nn.Module):
    """A GRU over the labels. At label ``j`` its input is the label's embedding and the actions
    taken for label ``j-1``; it outputs a categorical over loss weights and one over thresholds."""

    def __init__(self, num_labels: int, hidden: int = 32, weights: Sequence[float] = WEIGHT_CHOICES,
                 thresholds: Sequence[float] = tuple(THRESHOLD_GRID)) -> None:  # fmt: skip
        super().__init__()
        self.num_labels = num_labels
        self.weights = torch.tensor(weights)
        self.thresholds = torch.tensor(thresholds)
        self.label_embedding = nn.Embedding(num_labels, hidden)
        # One extra row each: the "no previous label" start token.
        self.weight_embedding = nn.Embedding(len(weights) + 1, hidden)
        self.threshold_embedding = nn.Embedding(len(thresholds) + 1, hidden)
        self.cell = nn.GRUCell(3 * hidden, hidden)
        self.weight_head = nn.Linear(hidden, len(weights))
        self.threshold_head = nn.Linear(hidden, len(thresholds))
        with torch.no_grad():  # start at the plain policy (weight 1, threshold 0.5), exploring around it
            for head in (self.weight_head, self.threshold_head):
                head.weight.zero_()
            self.weight_head.bias.copy_(-2 * self.weights.log() ** 2)
            self.threshold_head.bias.copy_(-10 * (self.thresholds - 0.5) ** 2)

    def forward(self, greedy: bool = False) -> Episode:
        hidden = torch.zeros(1, self.cell.hidden_size)
        previous_weight = torch.tensor([len(self.weights)])
        previous_threshold = torch.tensor([len(self.thresholds)])
        steps: dict[str, list[torch.Tensor]] = {key: [] for key in ("w", "t", "w_lp", "t_lp", "h")}
        for label in range(self.num_labels):
            step = torch.cat(
                [
                    self.label_embedding(torch.tensor([label])),
                    self.weight_embedding(previous_weight),
                    self.threshold_embedding(previous_threshold),
                ],
                dim=1,
            )
            hidden = self.cell(step, hidden)
            for head, name in ((self.weight_head, "w"), (self.threshold_head, "t")):
                distribution = torch.distributions.Categorical(logits=head(hidden))
                action = distribution.probs.argmax(dim=1) if greedy else distribution.sample()
                steps[name].append(action)
                steps[f"{name}_lp"].append(distribution.log_prob(action))
                steps["h"].append(distribution.entropy())
            previous_weight, previous_threshold = steps["w"][-1], steps["t"][-1]
        return Episode(
            torch.cat(steps["w"]), torch.cat(steps["t"]), torch.cat(steps["w_lp"]), torch.cat(steps["t_lp"]),
            torch.cat(steps["h"]).sum(),
        )  # fmt: skip

    def decode(
        self, weight_actions: torch.Tensor, threshold_actions: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.weights[weight_actions].numpy().astype(np.float64), self.thresholds[
            threshold_actions
        ].numpy().astype(np.float64)


@dataclass
class MetaResult:
    loss_weights: np.ndarray
    thresholds: np.ndarray
    classifier: MlpClassifier
    reward_curve: list[float] = field(default_factory=list)


def meta_learn(
    train: tuple[np.ndarray, np.ndarray],
    dev: tuple[np.ndarray, np.ndarray],
    classifier_config: ClassifierConfig,
    config: MetaConfig,
    progress: Progress | None = None,
) -> MetaResult:
    torch.manual_seed(config.seed)
    torch.set_num_threads(1)  # the networks are tiny: threads cost more than they save
    learner = MetaLearner(train[1].shape[1], config.hidden)
    optimizer = torch.optim.Adam(learner.parameters(), lr=config.lr)
    cache: dict[bytes, np.ndarray] = {}  # loss weights → dev probabilities (training is deterministic)

    def dev_probabilities(weights: np.ndarray) -> np.ndarray:
        key = weights.tobytes()
        if key not in cache:
            cache[key] = train_classifier(*train, weights, classifier_config).probabilities(dev[0])
        return cache[key]

    curve: list[float] = []
    task = progress.add_task("meta-learner (REINFORCE)", total=config.updates) if progress else None
    for _ in range(config.updates):
        episodes, rewards, label_f1 = [], [], []
        for _ in range(config.episodes_per_update):
            episode = learner()
            weights, thresholds = learner.decode(episode.weight_actions, episode.threshold_actions)
            scores = f1_scores(dev[1], apply_thresholds(dev_probabilities(weights), thresholds))
            episodes.append(episode)
            rewards.append(0.5 * (scores.micro_f1 + scores.macro_f1))
            label_f1.append(scores.per_label_f1)
        # Baselines are the batch means. A label's threshold changes only that label's
        # predictions, so its credit is its own F1 advantage plus the micro part of the reward;
        # loss weights act through the shared layer, so they get the whole reward's advantage.
        advantage = torch.tensor(rewards) - float(np.mean(rewards))
        label_advantage = torch.from_numpy(np.asarray(label_f1) - np.mean(label_f1, axis=0)).float()
        loss = torch.zeros(())
        for index, episode in enumerate(episodes):
            threshold_credit = 0.5 * label_advantage[index] + 0.5 * advantage[index]
            loss = loss - advantage[index] * episode.weight_log_probs.sum()
            loss = loss - (threshold_credit * episode.threshold_log_probs).sum()
            loss = loss - config.entropy_bonus * episode.entropy
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        curve.append(float(np.mean(rewards)))
        if progress is not None and task is not None:
            progress.update(
                task, advance=1, description=f"meta-learner (REINFORCE) dev reward {curve[-1]:.3f}"
            )
    with torch.no_grad():
        final = learner(greedy=True)
    weights, thresholds = learner.decode(final.weight_actions, final.threshold_actions)
    return MetaResult(weights, thresholds, train_classifier(*train, weights, classifier_config), curve)


def label_matrix(rows: Sequence, labels: Sequence[str]) -> np.ndarray:
    return np.array([[label in row.labels for label in labels] for row in rows], dtype=np.float64)


async def embed_texts(
    target: str, texts: Sequence[str], batch: int = 64, security: dict[str, object] | None = None
) -> np.ndarray:
    """Through the embedding service at ``target`` (``security``: its client TLS and token), waiting
    for it while it loads."""
    embedder = RemoteEmbedder(target, timeout_s=120, **(security or {}))
    said: set[str] = set()

    def report(message: str) -> None:
        if message not in said:
            said.add(message)
            Console(stderr=True).log(message)

    try:
        await embedder.wait_ready(report)
        chunks = [await embedder.embed(list(texts[i : i + batch])) for i in range(0, len(texts), batch)]
    finally:
        await embedder.close()
    return np.concatenate(chunks).astype(np.float64)


def _metrics(truth: np.ndarray, predicted: np.ndarray) -> PolicyMetrics:
    scores = f1_scores(truth, predicted)
    return PolicyMetrics(
        micro_f1=scores.micro_f1,
        macro_f1=scores.macro_f1,
        micro_precision=scores.micro_precision,
        micro_recall=scores.micro_recall,
        example_count=len(truth),
    )


def train_multilabel(
    dataset: str,
    models_dir: Path,
    embedding_target: str,
    *,
    name: str | None = None,
    classifier_config: ClassifierConfig = ClassifierConfig(),
    meta_config: MetaConfig = MetaConfig(),
    splits: MultiLabelSplits | None = None,
    console: Console | None = None,
    embedding_security: dict[str, object] | None = None,
) -> StoredMultiLabelModel:
    """Train all three policies on ``dataset`` and publish them as a new version of ``name``."""
    console = console or Console(stderr=True)
    if splits is None:
        if dataset not in MULTILABEL_DATASETS:
            raise ValueError(f"unknown data set {dataset!r}; expected one of {sorted(MULTILABEL_DATASETS)}")
        splits = MULTILABEL_DATASETS[dataset]()
    labels = list(splits.labels)
    began = time.perf_counter()
    with console.status(
        f"embedding {len(splits.train) + len(splits.dev) + len(splits.test)} texts through {embedding_target}"
    ):
        features = [
            asyncio.run(embed_texts(embedding_target, [row.text for row in part], security=embedding_security))
            for part in (splits.train, splits.dev, splits.test)
        ]
    train, dev, test = (
        (x, label_matrix(part, labels))
        for x, part in zip(features, (splits.train, splits.dev, splits.test), strict=True)
    )
    ones = np.ones(len(labels))
    unweighted = train_classifier(*train, ones, classifier_config)
    tuned_thresholds = tune_thresholds(unweighted.probabilities(dev[0]), dev[1])
    with MirroredProgress(
        *counting_columns(),
        console=console,
    ) as progress:
        meta = meta_learn(train, dev, classifier_config, meta_config, progress)
    test_probabilities = {
        "unweighted": unweighted.probabilities(test[0]),
        "meta": meta.classifier.probabilities(test[0]),
    }
    records = {
        Policy.FIXED: (np.full(len(labels), 0.5), ones, test_probabilities["unweighted"]),
        Policy.TUNED: (tuned_thresholds, ones, test_probabilities["unweighted"]),
        Policy.META: (meta.thresholds, meta.loss_weights, test_probabilities["meta"]),
    }
    policies = {
        policy: PolicyRecord(
            thresholds=thresholds.tolist(),
            loss_weights=weights.tolist(),
            test_metrics=_metrics(test[1], apply_thresholds(probabilities, thresholds)),
        )
        for policy, (thresholds, weights, probabilities) in records.items()
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    digest = hashlib.sha256(repr((classifier_config, meta_config, labels)).encode()).hexdigest()[:6]
    manifest = MultiLabelManifest(
        name=name or dataset,
        version=f"{stamp}-{digest}",
        dataset=splits.name,
        encoder=BASE_MODEL_NAME,
        labels=labels,
        policies=policies,
        training={
            "examples": {"train": len(splits.train), "dev": len(splits.dev), "test": len(splits.test)},
            "classifier": vars(classifier_config),
            "meta": vars(meta_config),
            "dev_reward_curve": [round(value, 4) for value in meta.reward_curve],
            "seconds": round(time.perf_counter() - began, 1),
        },
    )
    return save_model(models_dir, manifest, {"unweighted": unweighted, "meta": meta.classifier})
