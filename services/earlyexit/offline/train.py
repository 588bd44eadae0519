"""`rosemesh train earlyexit`: fine-tune, export to ONNX, check parity, measure, register.

For one data set this trains, on the same data:
- the plain classifier (one head on the last layer), first: the served baseline and the teacher;
- the multi-exit model (a classifier after every layer, summed losses, gradient equilibrium,
  distillation from the plain classifier), optionally for more epochs than the others;
- HashEE with the frequency hash and with a random hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import (
    Progress,
    TimeRemainingColumn,
)

from services.common.base_model import BASE_MODEL_NAME, source_model_dir
from services.common.model_versions import ModelVersions
from services.common.progress import MirroredProgress, counting_columns
from services.common.tokens import EncodedText, TextEncoder, pad_batch
from services.earlyexit.core.bundle import (
    ENCODER_CONFIG,
    EXIT_TABLE,
    HASHEE_GRAPH,
    PLAIN_GRAPH,
    TORCH_WEIGHTS,
    ModelManifest,
    OperatingPoint,
    StoredModel,
    models_root,
    segment_file,
    write_manifest,
)
from services.earlyexit.core.classifier import LoadedModel
from services.earlyexit.core.policy import CascadeResult, ExitMode, ExitPolicy, ModelKind
from services.offline.datasets import CLASSIFICATION_DATASETS, ClassificationSplits

MAX_TOKENS = 64
#: Bumped whenever what a variant trains or exports changes, so that older models are not reused.
MODEL_REVISION = 5  # 5: bundles keep their PyTorch weights beside the graphs
#: Accuracy a chosen operating point may lose against the plain model.
ONE_POINT = 0.01
OPSET = 17
PARITY_TOLERANCE = 1e-4
#: The paper's frequency hash exits tokens from layer 1; "-fromN" variants start at layer N,
#: which trades FLOPs for accuracy and draws HashEE's frontier.
MODEL_VARIANTS = (
    "multiexit",
    "plain",
    "hashee-frequency",
    "hashee-frequency-from2",
    "hashee-frequency-from3",
    "hashee-random",
)
#: Entropy thresholds swept at export, as fractions of ln(number of labels).
ENTROPY_FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
PATIENCES = (1, 2, 3)


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 2.0
    #: Epochs of the multi-exit model alone (None: ``epochs``). Its heads start from scratch and
    #: share the layers, so on many labels it needs longer than the plain classifier.
    multiexit_epochs: float | None = None
    batch_size: int = 32
    encoder_lr: float = 1e-4
    head_lr: float = 1e-3
    warmup: float = 0.06
    #: None: the whole training split (4000 examples left the shallow exits 1-2 points weaker).
    train_limit: int | None = None
    #: Self-distillation: each early exit also learns the last exit's softened answer.
    distill_weight: float = 1.0
    distill_temperature: float = 2.0
    #: The teacher: "plain" (the plain classifier, trained first, taught to every exit) or "last"
    #: (the model's own last exit, taught to the earlier ones).
    distill_from: str = "plain"
    #: Test examples the operating points are measured on (None: the whole test split).
    eval_limit: int | None = None
    seed: int = 0


def served_name(dataset: str, variant: str) -> str:
    """Model names as ListModels shows them: the multi-exit model takes the data set's name."""
    return dataset if variant == "multiexit" else f"{dataset}-{variant}"


def build_exit_table(
    token_ids: Sequence[np.ndarray],
    vocab_size: int,
    depth: int,
    special_ids: Sequence[int],
    hash_kind: str,
    seed: int = 0,
    first_layer: int = 1,
) -> np.ndarray:
    """HashEE's token → exit layer map (1-based). Tokens seen in the training corpus are ordered,
    most frequent first (``frequency``) or at random (``random``), and cut into equal buckets,
    one per layer from ``first_layer`` to ``depth``, the first bucket exiting earliest (the
    paper's hash has ``first_layer`` 1). Special and unseen tokens exit at the top."""
    if not 1 <= first_layer <= depth:
        raise ValueError(f"first_layer must be between 1 and {depth}, got {first_layer}")
    counts = np.bincount(np.concatenate(list(token_ids)), minlength=vocab_size)
    counts[list(special_ids)] = 0
    seen = np.flatnonzero(counts)
    if hash_kind == "frequency":
        order = seen[np.argsort(-counts[seen], kind="stable")]
    elif hash_kind == "random":
        order = np.random.default_rng(seed).permutation(seen)
    else:
        raise ValueError(f"unknown hash {hash_kind!r}; expected 'frequency' or 'random'")
    table = np.full(vocab_size, depth, dtype=np.int64)
    for layer, bucket in enumerate(np.array_split(order, depth - first_layer + 1), start=first_layer):
        table[bucket] = layer
    return table


@dataclass(frozen=True)
class HashVariant:
    kind: str  # "frequency" or "random"
    first_layer: int


def hash_variant(variant: str) -> HashVariant | None:
    """``hashee-frequency``, ``hashee-frequency-from3``, ``hashee-random`` → their hash; else None."""
    if not variant.startswith("hashee-"):
        return None
    kind, _, start = variant.removeprefix("hashee-").partition("-from")
    return HashVariant(kind, int(start) if start else 1)


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar length: shuffle, sort within pools of 50 batches, cut."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _batches(encoded: list[EncodedText], batch_size: int, rng: random.Random) -> list[list[int]]:
    return length_bucketed_batches([len(e.ids) for e in encoded], batch_size, rng)


def _tensors(encoded: list[EncodedText], rows: list[int]):  # -> tuple[torch.Tensor, torch.Tensor]
    import torch

    ids, mask = pad_batch([encoded[i] for i in rows])
    return torch.from_numpy(ids), torch.from_numpy(mask)


def fine_tune(
    model,
    encoded: list[EncodedText],
    labels: list[int],
    config: TrainConfig,
    progress: Progress,
    title: str,
    teacher_logits: np.ndarray | None = None,
) -> float:
    """Train ``model`` in place; returns the last epoch's mean loss. ``teacher_logits`` (one row
    per example) are distilled into every exit of a multi-exit model."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    head_params = [p for name, p in model.named_parameters() if not name.startswith("encoder.")]
    encoder_params = [p for name, p in model.named_parameters() if name.startswith("encoder.")]
    optimizer = torch.optim.AdamW(
        [{"params": encoder_params, "lr": config.encoder_lr}, {"params": head_params, "lr": config.head_lr}],
        weight_decay=0.01,
    )
    epochs = max(1, int(np.ceil(config.epochs)))
    schedule = [batch for _ in range(epochs) for batch in _batches(encoded, config.batch_size, rng)]
    schedule = schedule[: int(len(schedule) * config.epochs / epochs)]
    warmup = max(1, int(len(schedule) * config.warmup))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, max(0.0, (len(schedule) - step) / (len(schedule) - warmup))),
    )
    target = torch.tensor(labels)
    task = progress.add_task(title, total=len(schedule))
    model.train()
    losses: list[float] = []
    for rows in schedule:
        ids, mask = _tensors(encoded, rows)
        outputs = model(ids, mask)
        exits = outputs if isinstance(outputs, list) else [outputs]
        loss = sum(F.cross_entropy(logits, target[rows]) for logits in exits)
        if len(exits) > 1 and config.distill_weight > 0:
            teacher = torch.from_numpy(teacher_logits[rows]) if teacher_logits is not None else None
            loss = loss + config.distill_weight * distillation_loss(exits, config.distill_temperature, teacher)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        progress.update(task, advance=1, description=f"{title} loss {np.mean(losses[-50:]):.3f}")
    model.eval()
    return float(np.mean(losses[-len(schedule) // epochs :]))


def distillation_loss(exits: list, temperature: float, teacher_logits=None):  # list[Tensor] -> Tensor
    """KL from a fixed teacher's softened distribution to each student exit's, scaled by T² so
    that its gradients match the cross-entropy's in size. The teacher is ``teacher_logits`` (the
    plain classifier's), taught to every exit, or else the last exit, taught to the others."""
    import torch.nn.functional as F

    if teacher_logits is None:
        teacher_logits, students = exits[-1].detach(), exits[:-1]
    else:
        students = exits
    teacher = F.softmax(teacher_logits / temperature, dim=-1)
    return sum(
        F.kl_div(F.log_softmax(logits / temperature, dim=-1), teacher, reduction="batchmean") * temperature**2
        for logits in students
    )


def _logits(stored: StoredModel, encoded: list[EncodedText], batch: int = 64) -> np.ndarray:
    """A single-graph model's logits for every example, through ONNX Runtime."""
    from services.earlyexit.backends.onnx import OnnxModel

    model = OnnxModel(stored)
    depth = stored.manifest.num_layers
    rows = []
    for start in range(0, len(encoded), batch):
        ids, mask = pad_batch(encoded[start : start + batch])
        rows.append(model.classify(ids, mask, ExitPolicy(ExitMode.STATIC, static_layer=depth)).logits)
    return np.concatenate(rows).astype(np.float32)


def _export(module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic: dict) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about data-dependent shapes are expected
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )


def export_multi_exit(model, directory: Path, sample: tuple) -> float:
    """One graph per layer; returns the largest |ONNX - PyTorch| over every exit's logits."""
    import torch

    from services.earlyexit.backends.torch_model import Segment

    ids, mask = sample
    hidden = ids
    for index in range(model.encoder.depth):
        first = index == 0
        name = "input_ids" if first else "hidden_in"
        dynamic = {
            name: {0: "batch", 1: "tokens"},
            "attention_mask": {0: "batch", 1: "tokens"},
            "hidden_out": {0: "batch", 1: "tokens"},
            "logits": {0: "batch"},
        }
        segment = Segment(model, index).eval()
        with torch.no_grad():
            _export(
                segment,
                (hidden, mask),
                directory / segment_file(index),
                [name, "attention_mask"],
                ["hidden_out", "logits"],
                dynamic,
            )
            hidden, _ = segment(hidden, mask)
    return _multi_exit_parity(model, directory, ids, mask)


def _multi_exit_parity(model, directory: Path, ids, mask) -> float:
    import onnxruntime as ort
    import torch

    with torch.no_grad():
        expected = [logits.numpy() for logits in model(ids, mask)]
    inputs = ids.numpy()
    worst = 0.0
    for index, reference in enumerate(expected):
        session = ort.InferenceSession(
            str(directory / segment_file(index)), providers=["CPUExecutionProvider"]
        )
        name = "input_ids" if index == 0 else "hidden_in"
        inputs, logits = session.run(None, {name: inputs, "attention_mask": mask.numpy()})
        worst = max(worst, float(np.abs(logits - reference).max()))
    return worst


def export_single_graph(model, path: Path, sample: tuple) -> float:
    """One graph from token ids to logits (HashEE, the plain classifier); returns |ONNX - PyTorch|."""
    import onnxruntime as ort
    import torch

    ids, mask = sample
    model.eval()  # a fresh wrapper starts in training mode, dropout on
    dynamic = {
        "input_ids": {0: "batch", 1: "tokens"},
        "attention_mask": {0: "batch", 1: "tokens"},
        "logits": {0: "batch"},
    }
    with torch.no_grad():
        _export(model, (ids, mask), path, ["input_ids", "attention_mask"], ["logits"], dynamic)
        reference = model(ids, mask).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    return float(np.abs(logits - reference).max())


def save_torch_weights(model, directory: Path) -> None:
    """The weights explanations differentiate; the exit table travels as its own file."""
    from safetensors.torch import save_file

    weights = {key: value.detach().contiguous() for key, value in model.state_dict().items() if key != "exit_table"}
    save_file(weights, directory / TORCH_WEIGHTS)


def sweep_policies(kind: ModelKind, depth: int, num_labels: int) -> list[ExitPolicy]:
    """The operating points measured at export: every static exit, an entropy sweep, patience."""
    if kind is ModelKind.HASHEE:
        return [ExitPolicy(ExitMode.HASHEE)]
    if kind is ModelKind.PLAIN:
        return [ExitPolicy(ExitMode.STATIC, static_layer=depth)]
    policies = [ExitPolicy(ExitMode.STATIC, static_layer=layer) for layer in range(1, depth + 1)]
    policies += [
        ExitPolicy(ExitMode.DYNAMIC, entropy_threshold=round(fraction * float(np.log(num_labels)), 4))
        for fraction in ENTROPY_FRACTIONS
    ]
    policies += [ExitPolicy(ExitMode.PATIENCE, patience=p) for p in PATIENCES if p < depth]
    return policies


def measure_points(
    stored: StoredModel, texts: Sequence[str], gold: Sequence[int], batch_size: int = 32
) -> list[OperatingPoint]:
    """Every policy of the sweep through ONNX Runtime in process, on the test split."""
    from services.earlyexit.backends.onnx import OnnxModel

    onnx_model = OnnxModel(stored)
    loaded = LoadedModel(stored)
    manifest = stored.manifest

    async def run(ids: np.ndarray, mask: np.ndarray, policy: ExitPolicy) -> CascadeResult:
        return onnx_model.classify(ids, mask, policy)

    async def sweep() -> list[OperatingPoint]:
        return [
            await loaded.measure(run, texts, gold, policy, batch_size)
            for policy in sweep_policies(manifest.kind, manifest.num_layers, len(manifest.labels))
        ]

    return asyncio.run(sweep())


def pick_default_policy(
    dev_points: list[OperatingPoint], depth: int, reference_accuracy: float | None = None
) -> ExitPolicy:
    """The cheapest operating point (fewest mean FLOPs) within one accuracy point of the plain
    model (``reference_accuracy``; the multi-exit model's own last layer without one), all on
    the dev split so that the test split stays unseen; the full depth when none is."""
    full = ExitPolicy(ExitMode.STATIC, static_layer=depth)
    if reference_accuracy is None:
        reference_accuracy = next(p.accuracy for p in dev_points if p.exit_policy == full)
    candidates = [p for p in dev_points if p.accuracy >= reference_accuracy - ONE_POINT - 1e-9]
    return min(candidates, key=lambda p: p.mean_flops).exit_policy if candidates else full


def variant_epochs(config: TrainConfig, variant: str) -> float:
    """The epochs ``variant`` trains for: ``multiexit_epochs`` for the multi-exit model, if set."""
    if variant == "multiexit" and config.multiexit_epochs:
        return config.multiexit_epochs
    return config.epochs


def _version(config: TrainConfig, dataset: str, variant: str) -> str:
    # What shapes the weights; how many test examples were measured does not, nor does
    # distillation where there is only one exit.
    distilling = {"distill_weight", "distill_temperature", "distill_from"}
    ignored = {"eval_limit", "multiexit_epochs"} | (distilling if variant != "multiexit" else set())
    trained = {key: value for key, value in vars(config).items() if key not in ignored}
    trained["epochs"] = variant_epochs(config, variant)
    digest = hashlib.sha256(
        json.dumps([MODEL_REVISION, dataset, variant, trained], sort_keys=True).encode()
    ).hexdigest()
    return digest[:12]


@dataclass(frozen=True)
class PlannedModel:
    name: str
    version: str
    steps: int  # optimizer steps it takes to train


def training_plan(
    dataset: str, models_dir: Path, variants: Sequence[str] = MODEL_VARIANTS, config: TrainConfig = TrainConfig()
) -> list[PlannedModel]:
    """The models ``train_dataset`` would train: those not yet published with this configuration."""
    splits = CLASSIFICATION_DATASETS[dataset]()
    examples = min(len(splits.train), config.train_limit or len(splits.train))
    batches = int(np.ceil(examples / config.batch_size))
    versions = ModelVersions(models_root(models_dir))
    planned = [
        PlannedModel(served_name(dataset, v), _version(config, dataset, v), int(batches * variant_epochs(config, v)))
        for v in variants
    ]
    return [p for p in planned if not versions.is_published(p.name, p.version)]


def seconds_per_step(dataset: str, config: TrainConfig = TrainConfig(), steps: int = 3) -> float:
    """A multi-exit training step's wall time on this machine, on the data set's own batches."""
    import torch
    import torch.nn.functional as F

    from services.earlyexit.backends.torch_model import Encoder, MultiExitClassifier

    splits = CLASSIFICATION_DATASETS[dataset]()
    source = source_model_dir()
    bert_config = json.loads((source / "config.json").read_text())
    encoded = TextEncoder(source / "tokenizer.json", MAX_TOKENS).encode([r.text for r in splits.train[:2000]])
    batches = _batches(encoded, config.batch_size, random.Random(config.seed))
    torch.set_num_threads(os.cpu_count() or 1)
    model = MultiExitClassifier(Encoder(bert_config), len(splits.labels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    timings = []
    for rows in batches[: steps + 1]:  # the first step warms up
        began = time.perf_counter()
        ids, mask = _tensors(encoded, rows)
        target = torch.zeros(len(rows), dtype=torch.int64)
        loss = sum(F.cross_entropy(logits, target) for logits in model(ids, mask))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        timings.append(time.perf_counter() - began)
    return float(np.mean(timings[1:]))


def current_or_trained(
    dataset: str, models_dir: Path, variants: Sequence[str], config: TrainConfig, console: Console | None = None
) -> list[StoredModel]:
    """The version each variant serves now; only the variants never published are trained."""
    versions = ModelVersions(models_root(models_dir))
    missing = [v for v in variants if versions.current(served_name(dataset, v)) is None]
    if missing:
        train_dataset(dataset, models_dir, missing, config, console=console)
    return [StoredModel(versions.path(served_name(dataset, v), versions.current(served_name(dataset, v)))) for v in variants]


def train_dataset(
    dataset: str,
    models_dir: Path,
    variants: Sequence[str] = MODEL_VARIANTS,
    config: TrainConfig = TrainConfig(),
    *,
    force: bool = False,
    console: Console | None = None,
) -> list[StoredModel]:
    """Train, export and register ``variants`` for ``dataset``; reuses models already built
    with the same configuration unless ``force``."""
    import torch

    from services.earlyexit.backends.torch_model import (
        Encoder,
        HashEEClassifier,
        LastExit,
        MultiExitClassifier,
    )

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    console = console or Console(stderr=True)
    unknown = set(variants) - set(MODEL_VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; expected some of {MODEL_VARIANTS}")
    if dataset not in CLASSIFICATION_DATASETS:
        raise ValueError(f"unknown data set {dataset!r}; expected one of {sorted(CLASSIFICATION_DATASETS)}")
    splits: ClassificationSplits = CLASSIFICATION_DATASETS[dataset]()
    source = source_model_dir()
    bert_config = json.loads((source / "config.json").read_text())
    encoder_tok = TextEncoder(source / "tokenizer.json", MAX_TOKENS)
    label_index = {label: i for i, label in enumerate(splits.labels)}
    train_rows = splits.train[: config.train_limit] if config.train_limit else splits.train
    train_encoded = encoder_tok.encode([row.text for row in train_rows])
    train_labels = [label_index[row.label] for row in train_rows]
    test_rows = splits.test[: config.eval_limit] if config.eval_limit else splits.test
    test_texts = [row.text for row in test_rows]
    test_gold = [label_index[row.label] for row in test_rows]
    dev_rows = splits.dev[: config.eval_limit] if config.eval_limit else splits.dev
    dev_texts = [row.text for row in dev_rows]
    dev_gold = [label_index[row.label] for row in dev_rows]
    sample = _tensors(encoder_tok.encode(test_texts[:16]), list(range(min(16, len(test_texts)))))
    depth = bert_config["num_hidden_layers"]
    special = [encoder_tok.tokenizer.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")]
    torch.set_num_threads(os.cpu_count() or 1)

    versions = ModelVersions(models_root(models_dir))
    published: dict[str, str] = {}  # variant → the version it serves
    plain_accuracy: float | None = None  # on test, recorded in the multi-exit manifest
    plain_dev_accuracy: float | None = None  # the 1-point budget of the served default policy
    # The plain baseline first: the multi-exit model is measured against it.
    ordered = sorted(variants, key=lambda v: v != "plain")
    with MirroredProgress(
        *counting_columns(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        for variant in ordered:
            name = served_name(dataset, variant)
            version = _version(config, dataset, variant)
            if versions.is_published(name, version):
                if not force:
                    console.log(f"{name}: reusing version {version}")
                    versions.point(name, version)
                    published[variant] = version
                    if variant == "plain":
                        existing = StoredModel(versions.path(name, version))
                        plain_accuracy = existing.manifest.operating_points[0].accuracy
                        plain_dev_accuracy = measure_points(existing, dev_texts, dev_gold)[0].accuracy
                    continue
                version = f"{version}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
            encoder = Encoder(bert_config)
            encoder.load_bert(source)
            exit_table = None
            hashing = hash_variant(variant)
            if hashing is not None:
                exit_table = build_exit_table(
                    [e.ids for e in train_encoded],
                    bert_config["vocab_size"],
                    depth,
                    special,
                    hashing.kind,
                    config.seed,
                    hashing.first_layer,
                )
                model = HashEEClassifier(encoder, len(splits.labels), torch.from_numpy(exit_table))
            else:
                model = MultiExitClassifier(encoder, len(splits.labels), every_layer=variant == "multiexit")
            teacher = None
            if variant == "multiexit" and config.distill_from == "plain" and config.distill_weight > 0:
                plain_version = published.get("plain") or versions.current(served_name(dataset, "plain"))
                if plain_version is None:
                    raise ValueError(f"distilling from the plain classifier: train {served_name(dataset, 'plain')} first")
                plain = StoredModel(versions.path(served_name(dataset, "plain"), plain_version))
                teacher = _logits(plain, train_encoded)
            schedule = replace(config, epochs=variant_epochs(config, variant))
            loss = fine_tune(model, train_encoded, train_labels, schedule, progress, f"{name}", teacher)
            published[variant] = version
            with versions.publish(name, version) as directory:
                if exit_table is not None:
                    kind = ModelKind.HASHEE
                    np.save(directory / EXIT_TABLE, exit_table)
                    parity = export_single_graph(model, directory / HASHEE_GRAPH, sample)
                elif variant == "plain":
                    kind = ModelKind.PLAIN
                    parity = export_single_graph(LastExit(model), directory / PLAIN_GRAPH, sample)
                else:
                    kind = ModelKind.MULTI_EXIT
                    parity = export_multi_exit(model, directory, sample)
                if parity > PARITY_TOLERANCE:
                    raise RuntimeError(
                        f"{name}: ONNX differs from PyTorch by {parity:.2e} (> {PARITY_TOLERANCE})"
                    )
                (directory / "tokenizer.json").write_bytes((source / "tokenizer.json").read_bytes())
                save_torch_weights(model, directory)
                (directory / ENCODER_CONFIG).write_text(json.dumps(bert_config, indent=2))
                manifest = ModelManifest(
                    name=name,
                    version=version,
                    kind=kind,
                    base_model=BASE_MODEL_NAME,
                    dataset=dataset,
                    labels=list(splits.labels),
                    num_layers=depth,
                    hidden=bert_config["hidden_size"],
                    ffn=bert_config["intermediate_size"],
                    max_tokens=MAX_TOKENS,
                    default_policy=(
                        ExitPolicy(ExitMode.HASHEE)
                        if exit_table is not None
                        else ExitPolicy(ExitMode.STATIC, static_layer=depth)
                    ).as_dict(),
                    token_hash=hashing.kind if hashing is not None else None,
                    training={
                        **vars(config),
                        "final_loss": round(loss, 4),
                        "onnx_max_abs_diff": parity,
                        "train_examples": len(train_rows),
                        "hash_first_layer": hashing.first_layer if hashing is not None else None,
                    },
                )
                write_manifest(directory, manifest)
                stored = StoredModel(directory)
                with progress.console.status(f"{name}: measuring the operating points"):
                    points = measure_points(stored, test_texts, test_gold)
                    if kind is ModelKind.PLAIN:
                        plain_accuracy = points[0].accuracy
                        plain_dev_accuracy = measure_points(stored, dev_texts, dev_gold)[0].accuracy
                    elif kind is ModelKind.MULTI_EXIT:
                        dev_points = measure_points(stored, dev_texts, dev_gold)
                        manifest.default_policy = pick_default_policy(dev_points, depth, plain_dev_accuracy).as_dict()
                manifest.operating_points = points
                manifest.baseline_accuracy = plain_accuracy if kind is ModelKind.MULTI_EXIT else None
                write_manifest(directory, manifest)
                console.log(
                    f"{name}: " + ", ".join(f"{p.exit_policy.label} {p.accuracy:.3f}" for p in points[:8])
                )
    return [StoredModel(versions.path(served_name(dataset, v), published[v])) for v in variants]


