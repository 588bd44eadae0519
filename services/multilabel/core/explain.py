"""Which words each predicted label rests on: occlusion through the embedding service, the one
attribution a classifier of sentence vectors admits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.common.errors import FailedPrecondition, Validator
from services.common.explain import (
    Method,
    TextExplanation,
    check_options,
    occlude,
    pre_tokenized_words,
)
from services.multilabel.core.bundle import Policy, StoredMultiLabelModel
from services.multilabel.core.ports import TextEmbedder
from services.multilabel.core.scoring import apply_thresholds


@dataclass(frozen=True)
class LabelledText:
    probabilities: np.ndarray
    chosen: np.ndarray  # bool per label
    explanation: TextExplanation


def explained_labels(chosen: np.ndarray, probabilities: np.ndarray, target: int | None) -> list[int]:
    """The labels to explain: the one asked for, else those predicted, else the top-scored one."""
    if target is not None:
        return [target]
    present = [int(j) for j in np.argsort(-probabilities, kind="stable") if chosen[j]]
    return present or [int(probabilities.argmax())]


async def explain_multilabel(
    model: StoredMultiLabelModel,
    policy: Policy,
    embedder: TextEmbedder,
    texts: Sequence[str],
    methods: Sequence[Method] = (),
    steps: int = 0,
    target: int | None = None,
) -> list[LabelledText]:
    check = Validator()
    options = check_options(check, methods, steps, target, len(model.manifest.labels), [Method.OCCLUSION])
    check.raise_if_any()
    unsupported = sorted(m.value for m in set(options.methods) - {Method.OCCLUSION})
    if unsupported:
        raise FailedPrecondition(
            f"the multi-label model reads sentence vectors from the embedding service, so there is no gradient "
            f"path to the words: {', '.join(unsupported)} cannot run; ask for occlusion"
        )
    classifier, thresholds = model.classifier(policy), model.thresholds(policy)

    async def probabilities(batch: list[str]) -> np.ndarray:
        return classifier.probabilities(await embedder.embed(batch))

    full = await probabilities(list(texts))
    chosen = apply_thresholds(full, thresholds)
    words = [pre_tokenized_words(text) for text in texts]
    targets = [explained_labels(c, p, options.target_index) for c, p in zip(chosen, full, strict=True)]
    scored = await occlude(words, list(full), targets, probabilities)
    return [
        LabelledText(p, c, TextExplanation(w, s)) for p, c, w, s in zip(full, chosen, words, scored, strict=True)
    ]
