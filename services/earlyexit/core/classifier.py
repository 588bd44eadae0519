"""Tokenize, batch by length, run a backend and account for every text: the service's core."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from services.common.errors import InvalidInput, Validator
from services.common.tokens import EncodedText, TextEncoder, pad_batch
from services.earlyexit.core.bundle import ModelManifest, OperatingPoint, StoredModel
from services.earlyexit.core.policy import (
    CascadeResult,
    ExitPolicy,
    ModelKind,
    entropy,
    resolve_policy,
    softmax,
)

#: Runs one padded batch: (input_ids, attention_mask, policy) → exits.
BatchRunner = Callable[[np.ndarray, np.ndarray, ExitPolicy], Awaitable[CascadeResult]]


@dataclass(frozen=True)
class TextResult:
    label_index: int
    probabilities: np.ndarray
    exit_layer: int
    entropy: float
    flops: int
    token_count: int
    truncated: bool
    token_exits: list[tuple[str, int]] | None  # HashEE only
    logits: np.ndarray  # at the exit, as the model gave them


def logits_result(logits: np.ndarray, encoded: EncodedText, exit_layer: int) -> TextResult:
    """A text's result from its logits alone, as adapted tasks give it (no FLOPs accounted)."""
    probabilities = softmax(logits.astype(np.float64))
    return TextResult(
        label_index=int(probabilities.argmax()),
        probabilities=probabilities.astype(np.float32),
        exit_layer=exit_layer,
        entropy=float(entropy(probabilities)),
        flops=0,
        token_count=len(encoded.ids),
        truncated=encoded.truncated,
        token_exits=None,
        logits=logits,
    )


def length_batches(encoded: Sequence[EncodedText], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, which keeps padding small."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


class LoadedModel:
    """A served model: its manifest, tokenizer and (for HashEE) token exit table."""

    def __init__(self, stored: StoredModel) -> None:
        self.stored = stored
        self.manifest: ModelManifest = stored.manifest
        self.encoder = TextEncoder(stored.tokenizer_path, stored.manifest.max_tokens)
        self.exit_table = stored.exit_table() if stored.manifest.kind is ModelKind.HASHEE else None

    def account(self, encoded: EncodedText, logits: np.ndarray, exit_layer: int) -> TextResult:
        probabilities = softmax(logits.astype(np.float64))
        manifest = self.manifest
        token_exits = None
        if self.exit_table is not None:
            layers = self.exit_table[encoded.ids]
            flops = manifest.shape.hashee(layers, manifest.num_layers)
            token_exits = list(zip(self.encoder.tokens(encoded.ids), (int(x) for x in layers), strict=True))
        elif manifest.kind is ModelKind.PLAIN:
            flops = manifest.shape.plain(len(encoded.ids), manifest.num_layers)
        else:
            flops = manifest.shape.multi_exit(len(encoded.ids), exit_layer)
        return TextResult(
            label_index=int(probabilities.argmax()),
            probabilities=probabilities.astype(np.float32),
            exit_layer=exit_layer,
            entropy=float(entropy(probabilities)),
            flops=flops,
            token_count=len(encoded.ids),
            truncated=encoded.truncated,
            token_exits=token_exits,
            logits=logits,
        )

    def mean_layers(self, encoded: EncodedText, exit_layer: int) -> float:
        """Layers spent on a text; for HashEE, the mean exit layer over its tokens."""
        if self.exit_table is None:
            return float(exit_layer)
        return float(self.exit_table[encoded.ids].mean())

    async def classify_encoded(
        self, run: BatchRunner, encoded: Sequence[EncodedText], policy: ExitPolicy, batch_size: int
    ) -> list[TextResult]:
        results: list[TextResult | None] = [None] * len(encoded)
        for batch in length_batches(encoded, batch_size):
            ids, mask = pad_batch([encoded[i] for i in batch])
            outcome = await run(ids, mask, policy)
            for row, index in enumerate(batch):
                results[index] = self.account(
                    encoded[index], outcome.logits[row], int(outcome.exit_layers[row])
                )
        return results  # type: ignore[return-value]

    async def measure(
        self,
        run: BatchRunner,
        texts: Sequence[str],
        gold: Sequence[int],
        policy: ExitPolicy,
        batch_size: int = 32,
    ) -> OperatingPoint:
        """Accuracy, mean layers, mean FLOPs and throughput of ``policy`` on a labelled set."""
        encoded = self.encoder.encode(list(texts))
        began = time.perf_counter()
        results = await self.classify_encoded(run, encoded, policy, batch_size)
        seconds = time.perf_counter() - began
        correct = sum(result.label_index == label for result, label in zip(results, gold, strict=True))
        layers = [self.mean_layers(e, r.exit_layer) for e, r in zip(encoded, results, strict=True)]
        return OperatingPoint(
            policy=policy.as_dict(),
            accuracy=correct / len(results),
            mean_layers=float(np.mean(layers)),
            mean_flops=float(np.mean([r.flops for r in results])),
            throughput=len(results) / seconds,
        )


@dataclass(frozen=True)
class ClassifyLimits:
    max_texts: int = 256
    max_text_chars: int = 20_000
    batch_size: int = 32


class EarlyExitClassifier:
    """Every served model behind one backend; validates requests before any work is done."""

    def __init__(
        self,
        models: Sequence[StoredModel],
        run: Callable[[str], BatchRunner],
        default_model: str,
        limits: ClassifyLimits,
    ) -> None:
        self.models = {stored.name: LoadedModel(stored) for stored in models}
        if default_model not in self.models:
            raise ValueError(f"default model {default_model!r} is not among {sorted(self.models)}")
        self.default_model = default_model
        self._run = run
        self.limits = limits

    def model(self, name: str) -> LoadedModel:
        model = self.models.get(name or self.default_model)
        if model is None:
            raise InvalidInput.single(
                "model", f"unknown model {name!r}; served: {', '.join(sorted(self.models))}"
            )
        return model

    def validate_texts(self, texts: Sequence[str]) -> None:
        check = Validator()
        limits = self.limits
        if check.check(bool(texts), "texts", "must hold at least one text"):
            check.check(
                len(texts) <= limits.max_texts,
                "texts",
                f"{len(texts)} texts; at most {limits.max_texts} per call",
            )
        for index, text in enumerate(texts):
            if not text.strip():
                check.check(False, f"texts[{index}]", "is empty")
            elif len(text) > limits.max_text_chars:
                check.check(
                    False, f"texts[{index}]", f"{len(text)} characters; at most {limits.max_text_chars}"
                )
            if len(check.violations) >= 5:
                break
        check.raise_if_any()

    async def classify(
        self, texts: Sequence[str], model_name: str, policy: ExitPolicy | None
    ) -> tuple[LoadedModel, ExitPolicy, list[TextResult]]:
        model = self.model(model_name)
        manifest = model.manifest
        resolved = resolve_policy(
            policy,
            kind=manifest.kind,
            depth=manifest.num_layers,
            num_labels=len(manifest.labels),
            default=manifest.policy,
        )
        self.validate_texts(texts)
        return model, resolved, await self.classify_unchecked(model, texts, resolved)

    async def classify_unchecked(
        self, model: LoadedModel, texts: Sequence[str], policy: ExitPolicy
    ) -> list[TextResult]:
        """Texts already validated, under a resolved policy: what Explain's variants run through."""
        encoded = model.encoder.encode(list(texts))
        return await model.classify_encoded(self._run(model.manifest.name), encoded, policy, self.limits.batch_size)
