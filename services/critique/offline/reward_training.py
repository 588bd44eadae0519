"""`rosemesh train reward-model`: a Bradley-Terry reward model on all-MiniLM-L6-v2, optionally
self-trained with West-of-N pairs (Pace et al. 2024), exported to ONNX and published.

The model is a cross-encoder: [CLS] query [SEP] response [SEP] through the encoder, mean-pooled,
then one linear unit, the reward. It learns from preference pairs with the loss
-log sigmoid(r_chosen - r_rejected). The learning rate and the number of epochs are chosen on the
dev split (each epoch's checkpoint is measured there and the best kept); test is never looked at.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
import re
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import Progress

from services.adapters.chat import ChatEndpoint
from services.common.base_model import BASE_MODEL_NAME, source_model_dir
from services.common.errors import BackendUnavailable
from services.common.tokens import TextEncoder
from services.critique.backends.reward_model import (
    META_FILE,
    ONNX_FILE,
    ONNX_INPUTS,
    ONNX_OUTPUT,
    REWARD_MODEL_NAME,
    TOKENIZER_FILE,
    encode_pairs,
    reward_model_versions,
)
from services.critique.offline.reward_data import PreferencePair
from services.offline.datasets import MultipleChoiceQuestion, commonsense_qa_unlabelled

#: CommonsenseQA questions are 10-40 tokens and options 1-5: 64 truncates almost nothing.
MAX_TOKENS = 64
OPSET = 17
PARITY_TOLERANCE = 1e-4
WARMUP = 0.1
#: Of the encoder's 6 layers, the first ones kept as they are (see ``CrossEncoderReward``).
FROZEN_LAYERS = 2
#: The scorer used while sampling West-of-N and measuring: larger batches, no gradients.
SCORING_BATCH = 128

#: Draws ``n`` candidate responses to a question from an LLM.
Sampler = Callable[[MultipleChoiceQuestion, int], Awaitable[list[str]]]


class Scorer(Protocol):
    def score(self, query: str, responses: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class RewardTrainingConfig:
    #: The dev grid: each rate trains for ``max_epochs``; the best (rate, epoch) on dev is kept.
    learning_rates: tuple[float, ...] = (1e-4,)
    max_epochs: int = 4
    batch_size: int = 32
    max_tokens: int = MAX_TOKENS
    frozen_layers: int = FROZEN_LAYERS
    seed: int = 0


class CrossEncoderReward(torch.nn.Module):
    """The encoder's embeddings and layers, mean pooling, one linear unit. ``lower`` (embeddings
    and the first ``frozen_layers``) is never trained, so training computes it once per response
    and runs only ``upper`` each step."""

    def __init__(self, encoder: torch.nn.Module, frozen_layers: int = 0) -> None:
        super().__init__()
        self.embeddings = encoder.embeddings
        self.layers = encoder.encoder.layer
        self.frozen_layers = frozen_layers
        self.head = torch.nn.Linear(encoder.config.hidden_size, 1)
        for module in (self.embeddings, *self.layers[:frozen_layers]):
            module.requires_grad_(False)

    @staticmethod
    def _additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    def lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        mask = self._additive_mask(attention_mask, hidden.dtype)
        for layer in self.layers[: self.frozen_layers]:
            hidden = layer(hidden, mask)
        return hidden

    def upper(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = self._additive_mask(attention_mask, hidden.dtype)
        for layer in self.layers[self.frozen_layers :]:
            hidden = layer(hidden, mask)
        # Mean pooling, as the sentence model was trained with.
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return self.head(pooled).squeeze(-1)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        return self.upper(self.lower(input_ids, attention_mask, token_type_ids), attention_mask)


class LowerCache:
    """Each (query, response)'s hidden states after the frozen layers, computed once."""

    def __init__(self, model: CrossEncoderReward, encoder: TextEncoder, items: list[tuple[str, str]]) -> None:
        self.rows: dict[tuple[str, str], torch.Tensor] = {}
        model.eval()
        with torch.no_grad():
            for start in range(0, len(items), SCORING_BATCH):
                chunk = items[start : start + SCORING_BATCH]
                inputs = _inputs(encoder, chunk)
                hidden = model.lower(**inputs)
                for row, item in enumerate(chunk):
                    self.rows[item] = hidden[row, : int(inputs["attention_mask"][row].sum())].clone()

    def batch(self, items: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded hidden states and their attention mask."""
        rows = [self.rows[item] for item in items]
        hidden = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
        mask = torch.zeros(hidden.shape[:2], dtype=torch.int64)
        for row, states in enumerate(rows):
            mask[row, : len(states)] = 1
        return hidden, mask


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(r_chosen - r_rejected)."""
    return -F.logsigmoid(chosen - rejected).mean()


def pairwise_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float:
    """The share of pairs whose chosen response has the strictly higher reward (a tie is a miss)."""
    if len(chosen) != len(rejected):
        raise ValueError(f"{len(chosen)} chosen rewards against {len(rejected)} rejected")
    if not len(chosen):
        return 0.0
    return float(np.mean(np.asarray(chosen) > np.asarray(rejected)))


def _inputs(encoder: TextEncoder, pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(array) for name, array in encode_pairs(encoder, pairs).items()}


class TorchScorer:
    """A torch reward model behind the same ``score`` as the ONNX one."""

    def __init__(self, model: CrossEncoderReward, encoder: TextEncoder) -> None:
        self.model = model
        self.encoder = encoder

    def score_items(self, items: list[tuple[str, str]]) -> np.ndarray:
        self.model.eval()
        rewards = []
        with torch.no_grad():
            for start in range(0, len(items), SCORING_BATCH):
                rewards.append(self.model(**_inputs(self.encoder, items[start : start + SCORING_BATCH])).numpy())
        return np.concatenate(rewards) if rewards else np.zeros(0, dtype=np.float32)

    def score(self, query: str, responses: list[str]) -> np.ndarray:
        return self.score_items([(query, r) for r in responses])

    def pair_rewards(self, pairs: list[PreferencePair]) -> tuple[np.ndarray, np.ndarray]:
        rewards = self.score_items([(p.query, p.chosen) for p in pairs] + [(p.query, p.rejected) for p in pairs])
        return rewards[: len(pairs)], rewards[len(pairs) :]

    def accuracy(self, pairs: list[PreferencePair]) -> float:
        return pairwise_accuracy(*self.pair_rewards(pairs))

    def mean_loss(self, pairs: list[PreferencePair]) -> float:
        chosen, rejected = self.pair_rewards(pairs)
        return float(bradley_terry_loss(torch.from_numpy(chosen), torch.from_numpy(rejected)))


@dataclass
class TrainedRewardModel:
    scorer: TorchScorer
    learning_rate: float
    #: The epoch whose checkpoint is kept (the best on dev), of ``max_epochs``.
    epochs: int
    max_epochs: int
    dev_accuracy: float
    dev_loss: float
    train_pairs: int
    seconds: float
    #: Dev accuracy after each epoch, for every learning rate tried.
    dev_grid: dict[str, list[float]] = field(default_factory=dict)

    @property
    def model(self) -> CrossEncoderReward:
        return self.scorer.model

    def hyperparameters(self, config: RewardTrainingConfig) -> dict[str, object]:
        return {
            "learning_rate": self.learning_rate,
            "epochs": self.epochs,
            "max_epochs": self.max_epochs,
            "batch_size": config.batch_size,
            "frozen_layers": config.frozen_layers,
            "warmup": WARMUP,
            "learning_rates_tried": list(config.learning_rates),
        }


def base_reward_model(seed: int, frozen_layers: int = 0) -> CrossEncoderReward:
    from transformers import AutoModel

    torch.manual_seed(seed)  # the head's initial weights
    # Eager attention: the layers are called with an additive mask, which it takes as is.
    encoder = AutoModel.from_pretrained(source_model_dir(), attn_implementation="eager")
    return CrossEncoderReward(encoder, frozen_layers)


def pair_encoder(max_tokens: int) -> TextEncoder:
    return TextEncoder(source_model_dir() / "tokenizer.json", max_tokens)


def query_grouped_batches(pairs: list[PreferencePair], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches that keep a query's pairs together, so a response shared by several
    pairs (the right option, against each wrong one) is encoded once per step."""
    by_query: dict[str, list[int]] = {}
    for index, pair in enumerate(pairs):
        by_query.setdefault(pair.query, []).append(index)
    queries = list(by_query)
    rng.shuffle(queries)
    order = [index for query in queries for index in by_query[query]]
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def train_reward_model(
    pairs: list[PreferencePair],
    dev_pairs: list[PreferencePair],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    max_tokens: int,
    seed: int,
    frozen_layers: int = FROZEN_LAYERS,
    progress: Progress | None = None,
    title: str = "reward model",
) -> TrainedRewardModel:
    """Train for ``epochs`` (linear warm-up and decay) and keep the epoch checkpoint that is best
    on ``dev_pairs`` (accuracy, then loss). The embeddings and the first ``frozen_layers`` stay
    as the sentence model has them."""
    began = time.perf_counter()
    torch.set_num_threads(os.cpu_count() or 1)
    rng = random.Random(seed)
    scorer = TorchScorer(base_reward_model(seed, frozen_layers), pair_encoder(max_tokens))
    model = scorer.model
    cache = LowerCache(model, scorer.encoder, sorted({(p.query, r) for p in pairs for r in (p.chosen, p.rejected)}))
    trained = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=0.01)
    steps_per_epoch = len(query_grouped_batches(pairs, batch_size, random.Random(0)))
    total = steps_per_epoch * epochs
    warmup = max(1, int(total * WARMUP))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))
    )
    task = progress.add_task(title, total=total) if progress is not None else None
    best: tuple[tuple[float, float], int, dict[str, torch.Tensor]] | None = None
    by_epoch: list[float] = []
    losses: list[float] = []
    for epoch in range(1, epochs + 1):
        model.train()
        for rows in query_grouped_batches(pairs, batch_size, rng):
            batch = [pairs[i] for i in rows]
            items = sorted({(p.query, r) for p in batch for r in (p.chosen, p.rejected)})
            index = {item: i for i, item in enumerate(items)}
            rewards = model.upper(*cache.batch(items))
            chosen = rewards[[index[(p.query, p.chosen)] for p in batch]]
            rejected = rewards[[index[(p.query, p.rejected)] for p in batch]]
            loss = bradley_terry_loss(chosen, rejected)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            if progress is not None and task is not None:
                progress.update(task, advance=1, description=f"{title} epoch {epoch} loss {np.mean(losses[-50:]):.3f}")
        accuracy, dev_loss = scorer.accuracy(dev_pairs), scorer.mean_loss(dev_pairs)
        by_epoch.append(accuracy)
        if best is None or (accuracy, -dev_loss) > best[0]:
            best = ((accuracy, -dev_loss), epoch, copy.deepcopy(model.state_dict()))
    assert best is not None, "epochs must be at least 1"
    (accuracy, negative_loss), chosen_epoch, state = best
    model.load_state_dict(state)
    model.eval()
    return TrainedRewardModel(
        scorer=scorer,
        learning_rate=lr,
        epochs=chosen_epoch,
        max_epochs=epochs,
        dev_accuracy=accuracy,
        dev_loss=-negative_loss,
        train_pairs=len(pairs),
        seconds=time.perf_counter() - began,
        dev_grid={f"{lr:g}": by_epoch},
    )


def tune_reward_model(
    pairs: list[PreferencePair],
    dev_pairs: list[PreferencePair],
    config: RewardTrainingConfig,
    progress: Progress | None = None,
    title: str = "reward model",
) -> TrainedRewardModel:
    """One run per learning rate; the best on dev (accuracy, then loss) wins."""
    runs = [
        train_reward_model(
            pairs,
            dev_pairs,
            epochs=config.max_epochs,
            lr=lr,
            batch_size=config.batch_size,
            max_tokens=config.max_tokens,
            seed=config.seed,
            frozen_layers=config.frozen_layers,
            progress=progress,
            title=f"{title} lr {lr:g}",
        )
        for lr in config.learning_rates
    ]
    best = max(runs, key=lambda run: (run.dev_accuracy, -run.dev_loss))
    best.dev_grid = {key: value for run in runs for key, value in run.dev_grid.items()}
    best.seconds = sum(run.seconds for run in runs)
    return best


# West-of-N ---------------------------------------------------------------------------------------


async def west_of_n_pairs(
    model: Scorer,
    queries: list[MultipleChoiceQuestion],
    sample: Sampler,
    n: int,
    margin: float,
    *,
    time_budget_s: float | None = None,
    concurrency: int = 2,
    progress: Progress | None = None,
) -> list[PreferencePair]:
    """For each query, ``n`` sampled responses scored by ``model``: the best and the worst form a
    pair when their rewards differ by at least ``margin``. Queries not started when the time
    budget runs out are skipped; a query whose sampling fails is skipped too."""
    deadline = time.monotonic() + time_budget_s if time_budget_s is not None else None
    gate = asyncio.Semaphore(concurrency)
    task = progress.add_task("West-of-N sampling", total=len(queries)) if progress is not None else None

    async def one(question: MultipleChoiceQuestion) -> PreferencePair | None:
        async with gate:
            if deadline is not None and time.monotonic() > deadline:
                return None
            try:
                candidates = sorted({c for c in await sample(question, n) if c})
            except BackendUnavailable:
                candidates = []
            finally:
                if progress is not None and task is not None:
                    progress.advance(task)
        if len(candidates) < 2:
            return None
        rewards = await asyncio.to_thread(model.score, question.question, candidates)
        best, worst = int(np.argmax(rewards)), int(np.argmin(rewards))
        if rewards[best] - rewards[worst] < margin:
            return None
        return PreferencePair(question.question, candidates[best], candidates[worst])

    found = await asyncio.gather(*(one(q) for q in queries))
    return [pair for pair in found if pair is not None]


SAMPLER_SYSTEM = "Answer the multiple-choice question with the text of one option. Reply with that text only."
_LETTER = re.compile(r"^\(?([A-E])(?:[).:]|\s|$)")
#: A raw answer that names no option is kept, cut to this many words.
RAW_ANSWER_WORDS = 8


def sampler_prompt(question: MultipleChoiceQuestion) -> list[dict[str, str]]:
    options = "\n".join(f"{letter}. {text}" for letter, text in question.options.items())
    user = f"{question.question}\nOptions:\n{options}\nAnswer:"
    return [{"role": "system", "content": SAMPLER_SYSTEM}, {"role": "user", "content": user}]


def answer_as_response(answer: str, question: MultipleChoiceQuestion) -> str:
    """The LLM's answer in ``choice_response``'s form: the option's text when the answer names an
    option (by letter or by its text), else the answer's first words."""
    lines = answer.strip().splitlines()
    text = re.sub(r"^(the )?answer( is)?\s*:?\s*", "", lines[0].strip() if lines else "", flags=re.IGNORECASE)
    text = text.strip(" \"'*`")
    if (letter := _LETTER.match(text)) and letter.group(1) in question.options:
        return question.options[letter.group(1)]
    lowered = text.lower().rstrip(".!")
    named = [
        option
        for option in question.options.values()
        if lowered == option.lower() or re.search(rf"\b{re.escape(option.lower())}\b", lowered)
    ]
    if named:
        return max(named, key=len)
    return " ".join(text.split()[:RAW_ANSWER_WORDS]).rstrip(".")


def llm_sampler(endpoint: ChatEndpoint, temperature: float = 0.8, max_tokens: int = 16) -> Sampler:
    """Samples from an OpenAI-compatible endpoint, one call per candidate."""

    async def sample(question: MultipleChoiceQuestion, n: int) -> list[str]:
        messages = sampler_prompt(question)
        answers = await asyncio.gather(
            *(endpoint.complete(messages, temperature=temperature, max_tokens=max_tokens) for _ in range(n))
        )
        return [answer_as_response(answer, question) for answer in answers]

    return sample


# Export and publishing ---------------------------------------------------------------------------


def export_onnx(model: CrossEncoderReward, path: Path, sample: dict[str, torch.Tensor]) -> float:
    """Write the graph; returns the largest |ONNX - torch| reward on ``sample``."""
    import onnxruntime as ort

    model.eval()
    dynamic = {name: {0: "batch", 1: "sequence"} for name in ONNX_INPUTS} | {ONNX_OUTPUT: {0: "batch"}}
    arguments = tuple(sample[name] for name in ONNX_INPUTS)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes this graph does not branch on
        torch.onnx.export(
            model,
            arguments,
            str(path),
            input_names=list(ONNX_INPUTS),
            output_names=[ONNX_OUTPUT],
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )
        reference = model(*arguments).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (rewards,) = session.run([ONNX_OUTPUT], {name: tensor.numpy() for name, tensor in sample.items()})
    return float(np.abs(rewards - reference).max())


def next_version(models_dir: Path) -> str:
    """One more than the highest integer version published so far."""
    published = [int(v) for v in reward_model_versions(models_dir).versions(REWARD_MODEL_NAME) if v.isdigit()]
    return str(max(published, default=0) + 1)


def publish_reward_model(
    trained: TrainedRewardModel, models_dir: Path, parity_pairs: list[PreferencePair], meta: dict[str, object]
) -> Path:
    """Export, check parity on ``parity_pairs`` (padded, so the mask is exercised) and publish
    a new version, made current."""
    versions = reward_model_versions(models_dir)
    version = next_version(models_dir)
    items = [(p.query, r) for p in parity_pairs for r in (p.chosen, p.rejected)]
    sample = _inputs(trained.scorer.encoder, items)
    with versions.publish(REWARD_MODEL_NAME, version) as staging:
        parity = export_onnx(trained.model, staging / ONNX_FILE, sample)
        if parity > PARITY_TOLERANCE:
            raise RuntimeError(f"the ONNX reward model differs from torch by {parity:.2e} (> {PARITY_TOLERANCE})")
        (staging / TOKENIZER_FILE).write_bytes((source_model_dir() / "tokenizer.json").read_bytes())
        full_meta = {
            "name": REWARD_MODEL_NAME,
            "version": version,
            "base_model": BASE_MODEL_NAME,
            "max_tokens": trained.scorer.encoder.max_tokens,
            "onnx_max_abs_diff": parity,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **meta,
        }
        (staging / META_FILE).write_text(json.dumps(full_meta, indent=2) + "\n", encoding="utf-8")
    return versions.path(REWARD_MODEL_NAME, version)


# The whole recipe, shared by the CLI and the benchmark --------------------------------------------


@dataclass(frozen=True)
class WestOfNConfig:
    n: int = 4
    #: Reward gap between best and worst (sigmoid(1) = 0.73: the model prefers the best 3 to 1).
    margin: float = 1.0
    #: Unlabelled prompts sampled: CommonsenseQA's test questions, which ship without answers
    #: (new queries, as in West-of-N; the labelled splits stay as they are).
    questions: int = 240
    #: Sampling stops starting questions after this long.
    time_budget_s: float = 300.0


@dataclass
class RewardModelRun:
    config: RewardTrainingConfig
    base: TrainedRewardModel
    #: None when West-of-N did not run.
    west_of_n: TrainedRewardModel | None
    west_of_n_pairs: list[PreferencePair]
    sampling: dict[str, object]
    #: "base" or "west-of-n": the better on dev, published.
    published_kind: str
    published: Path


def sample_west_of_n(
    model: Scorer,
    queries: list[MultipleChoiceQuestion],
    llm_model_path: Path | None,
    config: WestOfNConfig,
    progress: Progress | None,
) -> tuple[list[PreferencePair], dict[str, object]]:
    """West-of-N pairs from a local llama.cpp server on ``llm_model_path`` (default SmolLM2),
    started only for the sampling so that it never competes with training for the cores."""
    from services.adapters.local_llm import LocalLLMServer

    began = time.perf_counter()

    async def run(base_url: str, alias: str) -> list[PreferencePair]:
        endpoint = ChatEndpoint(base_url, alias, timeout_s=60)
        try:
            return await west_of_n_pairs(
                model,
                queries,
                llm_sampler(endpoint),
                config.n,
                config.margin,
                time_budget_s=config.time_budget_s,
                progress=progress,
            )
        finally:
            await endpoint.close()

    with LocalLLMServer(llm_model_path) as server:
        pairs = asyncio.run(run(server.base_url, server.alias))
    figures = {
        **asdict(config),
        "sampler": server.model.name,
        "queries_offered": len(queries),
        "pairs": len(pairs),
        "seconds": round(time.perf_counter() - began, 1),
    }
    return pairs, figures


def train_and_publish(
    models_dir: Path,
    config: RewardTrainingConfig = RewardTrainingConfig(),
    *,
    west_of_n: WestOfNConfig | None = None,
    llm_model_path: Path | None = None,
    progress: Progress | None = None,
) -> RewardModelRun:
    """Train on the CommonsenseQA train pairs; with ``west_of_n``, also retrain on them plus
    West-of-N pairs the base model picked; publish whichever is better on dev."""
    from services.critique.offline.reward_data import csqa_pairs

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    train, dev = csqa_pairs("train"), csqa_pairs("dev")
    base = tune_reward_model(train, dev, config, progress, "base")
    self_trained, extra, sampling = None, [], {}
    if west_of_n is not None:
        queries = commonsense_qa_unlabelled(west_of_n.questions)
        extra, sampling = sample_west_of_n(base.scorer, queries, llm_model_path, west_of_n, progress)
        self_trained = tune_reward_model(train + extra, dev, config, progress, "West-of-N")
    kind, served = "base", base
    if self_trained is not None and (self_trained.dev_accuracy, -self_trained.dev_loss) > (
        base.dev_accuracy,
        -base.dev_loss,
    ):
        kind, served = "west-of-n", self_trained
    meta = {
        "kind": kind,
        "seed": config.seed,
        "training_pairs": {"commonsense_qa": len(train), "west_of_n": len(extra) if kind == "west-of-n" else 0},
        "hyperparameters": served.hyperparameters(config),
        "dev_accuracy": served.dev_accuracy,
        "dev_pairs": len(dev),
        "dev_accuracy_by_kind": {"base": base.dev_accuracy}
        | ({"west-of-n": self_trained.dev_accuracy} if self_trained else {}),
        "dev_grid": served.dev_grid,
        "west_of_n": sampling or None,
    }
    published = publish_reward_model(served, models_dir, dev[:8], meta)
    return RewardModelRun(config, base, self_trained, extra, sampling, kind, published)
