"""Why a text got its label: word attributions (occlusion through the serving path, integrated
gradients and attention on the model's PyTorch weights) and the exit trace, layer by layer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kernels import dispatch as kernels
from kernels.exit_cascade import ExitRule, WirePolicy
from services.common.errors import FailedPrecondition, Validator
from services.common.explain import (
    ExplainRequestOptions,
    Method,
    TextExplanation,
    Words,
    WordScores,
    check_options,
    check_text_count,
    occlude,
    split_words,
)
from services.earlyexit.core.adapters import TenantAdapter
from services.earlyexit.core.classifier import EarlyExitClassifier, LoadedModel, TextResult, logits_result
from services.earlyexit.core.policy import ExitMode, ExitPolicy, ModelKind, entropy, policy_to_wire, softmax
from services.earlyexit.core.ports import GradientAttributor
from services.earlyexit.core.tenants import TenantClassifier


@dataclass(frozen=True)
class LayerPrediction:
    layer: int
    label_index: int
    confidence: float
    entropy: float
    streak: int  # consecutive layers up to this one with the same prediction


@dataclass(frozen=True)
class ExitTrace:
    layers: list[LayerPrediction]
    exit_layer: int
    rule: str


@dataclass(frozen=True)
class Explained:
    result: TextResult
    explanation: TextExplanation
    trace: ExitTrace


def layer_predictions(layer_logits: np.ndarray, layers: Sequence[int]) -> list[LayerPrediction]:
    steps, streak, previous = [], 0, -1
    for layer, logits in zip(layers, layer_logits, strict=True):
        probabilities = softmax(logits.astype(np.float64))
        label = int(probabilities.argmax())
        streak = streak + 1 if label == previous else 0
        previous = label
        steps.append(LayerPrediction(layer, label, float(probabilities[label]), float(entropy(probabilities)), streak))
    return steps


def multi_exit_trace(layer_logits: np.ndarray, policy: ExitPolicy, depth: int) -> ExitTrace:
    """The policy replayed on every layer's logits with the cascade's own rule and exit test."""
    steps = layer_predictions(layer_logits, range(1, depth + 1))
    rule = ExitRule(WirePolicy(*policy_to_wire(policy)), depth, rows=1, exit_test=kernels.decide_exits)
    exit_layer = depth
    for layer in range(1, depth + 1):
        if rule.exits(layer, np.zeros(1, dtype=np.int64), layer_logits[layer - 1 : layer])[0]:
            exit_layer = layer
            break
    step = steps[exit_layer - 1]
    if policy.mode is ExitMode.STATIC:
        why = f"static: the first {policy.static_layer} of {depth} layers"
    elif policy.mode is ExitMode.DYNAMIC and step.entropy < (policy.entropy_threshold or 0):
        why = f"entropy {step.entropy:.4f} < {policy.entropy_threshold:.4f} at layer {exit_layer}"
    elif policy.mode is ExitMode.PATIENCE and step.streak >= (policy.patience or 0):
        why = f"prediction unchanged for {step.streak} layers (patience {policy.patience}) at layer {exit_layer}"
    else:
        why = f"no layer met the {policy.label} rule; the last layer, {depth}, answers"
    return ExitTrace(steps, exit_layer, why)


def single_exit_trace(logits: np.ndarray, kind: ModelKind | None, depth: int) -> ExitTrace:
    steps = layer_predictions(logits[None, :], [depth])
    if kind is ModelKind.HASHEE:
        why = f"hashee: each token stops at its hashed layer; [CLS] reaches layer {depth}, where the classifier reads it"
    elif kind is ModelKind.PLAIN:
        why = f"plain: every layer, {depth}"
    else:
        why = f"adapter: every layer of the shared backbone, {depth}"
    return ExitTrace(steps, depth, why)


def targets_of(results: Sequence[TextResult], options: ExplainRequestOptions) -> list[int]:
    return [result.label_index if options.target_index is None else options.target_index for result in results]


class EarlyExitExplainer:
    """Explanations of served models; integrated gradients and attention come from ``gradients``
    (a model's PyTorch weights), loaded on first use."""

    def __init__(self, classifier: EarlyExitClassifier, gradients: Callable[[LoadedModel], GradientAttributor]) -> None:
        self.classifier = classifier
        self._gradients = gradients

    def check(
        self, texts: Sequence[str], model: LoadedModel, methods: Sequence[Method], steps: int, target: int | None
    ) -> ExplainRequestOptions:
        check = Validator()
        check_text_count(check, texts)
        defaults = [Method.OCCLUSION, *([Method.INTEGRATED_GRADIENTS] if model.stored.has_torch_weights else [])]
        options = check_options(check, methods, steps, target, len(model.manifest.labels), defaults)
        check.raise_if_any()
        self.classifier.validate_texts(texts)
        gradient_methods = {Method.INTEGRATED_GRADIENTS, Method.ATTENTION} & set(options.methods)
        if gradient_methods and not model.stored.has_torch_weights:
            raise FailedPrecondition(
                f"model {model.manifest.name} version {model.manifest.version} keeps no PyTorch weights, so "
                f"{', '.join(sorted(m.value for m in gradient_methods))} cannot run; retrain it, or ask for occlusion"
            )
        return options

    async def explain(
        self,
        texts: Sequence[str],
        model_name: str,
        policy: ExitPolicy | None,
        methods: Sequence[Method] = (),
        steps: int = 0,
        target: int | None = None,
    ) -> tuple[LoadedModel, ExitPolicy, list[Explained]]:
        model = self.classifier.model(model_name)
        options = self.check(texts, model, methods, steps, target)
        model, resolved, results = await self.classifier.classify(texts, model_name, policy)
        words = [split_words(model.encoder.tokenizer, text) for text in texts]
        targets = targets_of(results, options)
        explanations = [TextExplanation(w) for w in words]
        if Method.OCCLUSION in options.methods:
            scored = await occlude(
                words, [r.probabilities for r in results], [[t] for t in targets], self._probabilities(model, resolved)
            )
            for explanation, (scores,) in zip(explanations, scored, strict=True):
                explanation.attributions.append(scores)
        gradient_methods = [m for m in options.methods if m is not Method.OCCLUSION]
        if gradient_methods:
            attributor = await asyncio.to_thread(self._gradients, model)
            for explanation, result, text_target in zip(explanations, results, targets, strict=True):
                encoded = model.encoder.encode([explanation.words.text])[0]
                for method in gradient_methods:
                    explanation.attributions.append(
                        await asyncio.to_thread(
                            _gradient_scores, attributor, method, encoded.ids, explanation.words, result.exit_layer,
                            text_target, options.steps,
                        )
                    )  # fmt: skip
        traces = await self._traces(model, resolved, texts, results)
        ordered = [_in_order(e, options) for e in explanations]
        return model, resolved, [Explained(r, e, t) for r, e, t in zip(results, ordered, traces, strict=True)]

    def _probabilities(self, model: LoadedModel, policy: ExitPolicy):
        async def probabilities(texts: list[str]) -> np.ndarray:
            results = await self.classifier.classify_unchecked(model, texts, policy)
            return np.stack([result.probabilities for result in results])

        return probabilities

    async def _traces(
        self, model: LoadedModel, policy: ExitPolicy, texts: Sequence[str], results: Sequence[TextResult]
    ) -> list[ExitTrace]:
        manifest = model.manifest
        depth = manifest.num_layers
        if manifest.kind is not ModelKind.MULTI_EXIT:
            return [single_exit_trace(r.logits, manifest.kind, depth) for r in results]
        per_layer = []  # [layer][text] probabilities, each layer read through the serving path
        for layer in range(1, depth + 1):
            static = await self.classifier.classify_unchecked(model, list(texts), ExitPolicy(ExitMode.STATIC, static_layer=layer))
            per_layer.append([r.logits for r in static])
        return [multi_exit_trace(np.stack([layer[i] for layer in per_layer]), policy, depth) for i in range(len(texts))]


def _gradient_scores(
    attributor: GradientAttributor,
    method: Method,
    ids: np.ndarray,
    words: Words,
    exit_layer: int,
    target: int,
    steps: int,
) -> WordScores:
    began = time.perf_counter()
    delta = None
    if method is Method.INTEGRATED_GRADIENTS:
        pieces, delta = attributor.integrated_gradients(ids, exit_layer, target, steps)
    else:
        pieces = attributor.attention(ids, exit_layer)
    return WordScores(method, target, words.sum_pieces(pieces), time.perf_counter() - began, delta)


async def explain_task(
    tenants: TenantClassifier,
    gradients: Callable[[TenantAdapter], GradientAttributor],
    texts: Sequence[str],
    tenant: str,
    task: str,
    deadline_s: float | None,
    methods: Sequence[Method] = (),
    steps: int = 0,
    target: int | None = None,
) -> tuple[TenantAdapter, list[Explained]]:
    """A tenant's adapted task: occlusion through the tenant serving path, and integrated
    gradients through ``gradients`` (the adapter over the base model in PyTorch)."""
    check = Validator()
    check_text_count(check, texts)
    check.raise_if_any()
    if Method.ATTENTION in methods:
        raise FailedPrecondition("adapted tasks are explained by occlusion and integrated gradients; attention cannot run")
    adapter, encoded, logits = await tenants.classify(texts, tenant, task, deadline_s)
    depth = tenants.backbone.manifest.num_layers
    defaults = [Method.OCCLUSION, Method.INTEGRATED_GRADIENTS]
    options = check_options(check, methods, steps, target, len(adapter.manifest.labels), defaults)
    check.raise_if_any()
    results = [logits_result(values, text, depth) for values, text in zip(logits, encoded, strict=True)]
    words = [split_words(tenants.encoder.tokenizer, text) for text in texts]
    targets = targets_of(results, options)
    explanations = [TextExplanation(w) for w in words]
    if Method.OCCLUSION in options.methods:

        async def probabilities(variants: list[str]) -> np.ndarray:
            _, _, variant_logits = await tenants.classify(variants, tenant, task, deadline_s)
            return softmax(np.stack(variant_logits).astype(np.float64))

        scored = await occlude(words, [r.probabilities for r in results], [[t] for t in targets], probabilities)
        for explanation, (scores,) in zip(explanations, scored, strict=True):
            explanation.attributions.append(scores)
    if Method.INTEGRATED_GRADIENTS in options.methods:
        attributor = await asyncio.to_thread(gradients, adapter)
        for explanation, text, text_target in zip(explanations, encoded, targets, strict=True):
            explanation.attributions.append(
                await asyncio.to_thread(
                    _gradient_scores, attributor, Method.INTEGRATED_GRADIENTS, text.ids, explanation.words, depth,
                    text_target, options.steps,
                )
            )  # fmt: skip
    ordered = [_in_order(e, options) for e in explanations]
    return adapter, [
        Explained(result, explanation, single_exit_trace(result.logits, None, depth))
        for result, explanation in zip(results, ordered, strict=True)
    ]


def _in_order(explanation: TextExplanation, options: ExplainRequestOptions) -> TextExplanation:
    """Attributions in the order the request named their methods."""
    ordered = sorted(explanation.attributions, key=lambda a: options.methods.index(a.method))
    return TextExplanation(explanation.words, ordered)
