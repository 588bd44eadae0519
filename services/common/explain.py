"""Word attributions shared by every classifier's Explain: words as the model's tokenizer splits
them, occlusion through the serving path, and word pieces' scores summed into words.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from tokenizers import Tokenizer
from tokenizers.pre_tokenizers import BertPreTokenizer

from services.common.errors import Validator

#: What a text with every word removed is read as: the classifiers take no empty text.
EMPTY_TEXT_STAND_IN = "."
#: Texts one Explain call takes at most: each costs a pass per word and per integrated-gradients step.
MAX_EXPLAIN_TEXTS = 16
DEFAULT_STEPS = 32
MAX_STEPS = 256
MIN_STEPS = 4
_SPACES = re.compile(r"\s+")
_PRE_TOKENIZER = BertPreTokenizer()


class Method(StrEnum):
    OCCLUSION = "occlusion"
    INTEGRATED_GRADIENTS = "integrated_gradients"
    ATTENTION = "attention"


@dataclass(frozen=True)
class Words:
    """A text's words (character spans) and, per token position, the word it belongs to (-1 for
    special tokens), for the first ``max_tokens`` tokens the model sees."""

    text: str
    spans: list[tuple[int, int]]
    piece_words: np.ndarray

    def __len__(self) -> int:
        return len(self.spans)

    def word(self, index: int) -> str:
        start, end = self.spans[index]
        return self.text[start:end]

    def without(self, dropped: set[int]) -> str:
        """The text with the ``dropped`` words cut out."""
        pieces, cursor = [], 0
        for index, (start, end) in enumerate(self.spans):
            if index in dropped:
                pieces.append(self.text[cursor:start])
                cursor = end
        pieces.append(self.text[cursor:])
        return _SPACES.sub(" ", "".join(pieces)).strip() or EMPTY_TEXT_STAND_IN

    def only(self, kept: set[int]) -> str:
        """The ``kept`` words alone, in text order."""
        return " ".join(self.word(i) for i in sorted(kept)) or EMPTY_TEXT_STAND_IN

    def sum_pieces(self, piece_scores: np.ndarray) -> np.ndarray:
        """Word pieces' scores summed into their words."""
        scores = np.zeros(len(self.spans), dtype=np.float64)
        real = self.piece_words >= 0
        np.add.at(scores, self.piece_words[real], piece_scores[: len(self.piece_words)][real])
        return scores


def split_words(tokenizer: Tokenizer, text: str) -> Words:
    """``text``'s words as ``tokenizer`` (truncating as configured) pre-tokenizes and sees them."""
    encoding = tokenizer.encode(text)
    first_piece: dict[int, int] = {}
    spans: list[tuple[int, int]] = []
    piece_words = np.full(len(encoding.ids), -1, dtype=np.int64)
    for position, (word_id, (start, end)) in enumerate(zip(encoding.word_ids, encoding.offsets, strict=True)):
        if word_id is None:
            continue
        if word_id not in first_piece:
            first_piece[word_id] = len(spans)
            spans.append((start, end))
        index = first_piece[word_id]
        spans[index] = (spans[index][0], end)
        piece_words[position] = index
    return Words(text, spans, piece_words)


def occlusion_texts(words: Words) -> list[str]:
    """One text per word, that word removed."""
    return [words.without({index}) for index in range(len(words))]


@dataclass(frozen=True)
class ExplainRequestOptions:
    methods: tuple[Method, ...]
    steps: int
    target_index: int | None


@dataclass(frozen=True)
class WordScores:
    method: Method
    target_index: int
    scores: np.ndarray  # one per word
    seconds: float
    convergence_delta: float | None = None


@dataclass
class TextExplanation:
    words: Words
    attributions: list[WordScores] = field(default_factory=list)


def check_text_count(check: Validator, texts: Sequence[str]) -> None:
    check.check(
        len(texts) <= MAX_EXPLAIN_TEXTS, "texts", f"{len(texts)} texts; Explain takes at most {MAX_EXPLAIN_TEXTS}"
    )


def check_options(
    check: Validator,
    methods: Sequence[Method],
    steps: int,
    target_index: int | None,
    num_labels: int,
    default_methods: Sequence[Method],
) -> ExplainRequestOptions:
    """Options with defaults filled in; violations go to ``check``."""
    check.check(
        steps == 0 or MIN_STEPS <= steps <= MAX_STEPS,
        "options.steps",
        f"must be 0 (the default, {DEFAULT_STEPS}) or between {MIN_STEPS} and {MAX_STEPS}, got {steps}",
    )
    if target_index is not None:
        check.check(
            0 <= target_index < num_labels,
            "options.target_index",
            f"must name one of the model's {num_labels} labels (0 to {num_labels - 1}), got {target_index}",
        )
    chosen = tuple(dict.fromkeys(methods)) or tuple(default_methods)
    return ExplainRequestOptions(chosen, steps or DEFAULT_STEPS, target_index)


def occlusion_scores(full: float, occluded: np.ndarray) -> np.ndarray:
    """Each word's score: the target's probability with the text whole, less without the word."""
    return full - np.asarray(occluded, dtype=np.float64)


async def occlude(
    texts_words: Sequence[Words],
    full: Sequence[np.ndarray],
    targets: Sequence[Sequence[int]],
    probabilities: Callable[[list[str]], Awaitable[np.ndarray]],
) -> list[list[WordScores]]:
    """Occlusion for many texts in one pass through ``probabilities`` (texts → per-label scores,
    the serving path): for each of a text's targets, each word's score is the drop in that
    target's score without the word."""
    began = time.perf_counter()
    variants = [occlusion_texts(words) for words in texts_words]
    flat = [text for group in variants for text in group]
    scored = await probabilities(flat) if flat else np.zeros((0, 0))
    seconds = (time.perf_counter() - began) / max(1, len(texts_words))
    results, cursor = [], 0
    for group, whole, text_targets in zip(variants, full, targets, strict=True):
        rows = scored[cursor : cursor + len(group)]
        cursor += len(group)
        results.append(
            [
                WordScores(Method.OCCLUSION, t, occlusion_scores(float(whole[t]), rows[:, t] if group else np.zeros(0)), seconds)
                for t in text_targets
            ]
        )
    return results


def pre_tokenized_words(text: str) -> Words:
    """``text``'s words as BERT's pre-tokenizer splits them, for models that read whole texts
    (no word pieces to map)."""
    spans = [span for _, span in _PRE_TOKENIZER.pre_tokenize_str(text)]
    return Words(text, spans, np.zeros(0, dtype=np.int64))
