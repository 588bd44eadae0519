"""Preference pairs for the reward model, from CommonsenseQA: the right option is preferred to a
wrong one, as answers to the bare question (what a judge sees too).

Questions are split by a seeded hash of their text, not by list order, so a question keeps its
split whatever the data set's order or length, and no question is in two splits.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Literal

from services.offline.datasets import MultipleChoiceQuestion, commonsense_qa

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")
SPLIT_SEED = "reward-model-v1"
#: Shares of the hash range, in permille: 20% test (about 240 of 1221), 15% dev, the rest train.
TEST_PERMILLE = 200
DEV_PERMILLE = 150
#: Picks the one wrong option of each dev and test pair.
PAIR_SEED = 0


@dataclass(frozen=True)
class PreferencePair:
    query: str
    chosen: str
    rejected: str


def choice_response(question: MultipleChoiceQuestion, letter: str) -> str:
    """The response that answers ``question`` with option ``letter``: the option's text alone
    ("bank"), exactly as the judge benchmark shows it."""
    return question.options[letter]


def split_of(question_text: str) -> Split:
    digest = hashlib.sha256(f"{SPLIT_SEED}\n{question_text}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % 1000
    if bucket < TEST_PERMILLE:
        return "test"
    if bucket < TEST_PERMILLE + DEV_PERMILLE:
        return "dev"
    return "train"


def csqa_questions(split: Split) -> list[MultipleChoiceQuestion]:
    """The split's questions, in the data set's order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return [q for q in commonsense_qa() if split_of(q.question) == split]


def _wrong_letters(question: MultipleChoiceQuestion) -> list[str]:
    return [letter for letter in question.options if letter != question.answer]


def csqa_pairs(split: Split) -> list[PreferencePair]:
    """Train: the right option against each of the 4 wrong ones. Dev and test: one pair per
    question, against one wrong option drawn with a generator seeded by the question, so that a
    held-out figure counts each question once and the same pair whatever else is drawn."""
    pairs = []
    for question in csqa_questions(split):
        chosen = choice_response(question, question.answer)
        wrong = _wrong_letters(question)
        if split != "train":
            wrong = [random.Random(f"{PAIR_SEED}\n{question.question}").choice(wrong)]
        pairs += [PreferencePair(question.question, chosen, choice_response(question, w)) for w in wrong]
    return pairs


def held_out_pairs(limit: int | None = None) -> list[PreferencePair]:
    """The first ``limit`` test pairs: the same pairs, in the same order, on every call, so that
    the reward model and the LLM judges are measured on the same ones."""
    pairs = csqa_pairs("test")
    return pairs[:limit] if limit is not None else pairs
