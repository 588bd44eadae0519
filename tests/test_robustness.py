"""Perturbations (reproducible, never empty, each doing what it says) and the robustness and
faithfulness figures computed from them, on real data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.explain import Words
from services.offline.datasets import banking77
from services.offline.faithfulness import erase, faithfulness, top_words
from services.offline.perturbations import PERTURBATIONS, Homophones, perturb_text, perturb_texts
from services.offline.robustness_bench import classification_report, label_rank_spearman, nbest_recall

TEXTS = [row.text for row in banking77().test[:60]]


@pytest.mark.parametrize("kind", [*PERTURBATIONS, "mixed"])
def test_a_seed_gives_the_same_perturbed_set_every_time(kind: str) -> None:
    first = perturb_texts(TEXTS, kind, 0.3, seed=7)
    assert first == perturb_texts(TEXTS, kind, 0.3, seed=7)
    # Each text from its own seed: the same text perturbs alike whatever else is in the set.
    assert perturb_texts(TEXTS[10:20], kind, 0.3, seed=7) == first[10:20]
    assert perturb_texts(TEXTS, kind, 0.3, seed=8) != first
    changed = np.mean([a != b for a, b in zip(TEXTS, first, strict=True)])
    assert changed > 0.5, f"{kind} changed only {changed:.0%} of the texts"


@settings(max_examples=60, deadline=None)
@given(text=st.text(min_size=1, max_size=40), kind=st.sampled_from([*PERTURBATIONS, "mixed"]), seed=st.integers(0, 99))
def test_a_perturbation_never_returns_an_empty_text(text: str, kind: str, seed: int) -> None:
    (out,) = perturb_texts([text], kind, 0.5, seed)
    assert out.strip() or out == text


def test_severity_sets_how_many_words_change() -> None:
    light = perturb_texts(TEXTS, "char_swap", 0.1, seed=1)
    heavy = perturb_texts(TEXTS, "char_swap", 0.9, seed=1)

    def changed_words(a: str, b: str) -> int:
        return sum(x != y for x, y in zip(a.split(), b.split(), strict=False))

    assert sum(map(changed_words, TEXTS, heavy)) > 2 * sum(map(changed_words, TEXTS, light))
    with pytest.raises(ValueError, match="severity"):
        perturb_text("hello there", "keyboard", 0.0)
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb_text("hello there", "synonym")


def test_homophones_come_from_the_pronouncing_dictionary() -> None:
    table = Homophones({"there", "their", "write", "right", "bare", "pear", "bet"})
    assert "their" in table.candidates("there") and "right" in table.candidates("write")
    assert table.candidates("pair") == ["pear"]  # an exact homophone beats the near ones
    assert "bet" in table.candidates("bed")  # near: /d/ and /t/ differ in voicing only
    assert perturb_text("Their card was declined", "homophone", 1.0, seed=3) != "Their card was declined"


def test_nbest_recall_and_rank_correlation() -> None:
    scores = np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5]])
    gold = np.array([1, 0])
    assert nbest_recall(scores, gold, 1) == 0.0 and nbest_recall(scores, gold, 2) == 0.5
    assert label_rank_spearman(scores, scores) == pytest.approx(1.0)
    assert label_rank_spearman(scores, scores[:, ::-1]) == pytest.approx(-1.0)


def test_a_variant_report_measures_degradation_against_clean() -> None:
    gold = np.array([0, 1, 2, 3])
    clean = np.eye(4)
    noisy = np.eye(4)[[0, 1, 3, 2]]  # half the texts flip
    report = classification_report(gold, clean, {"mixed": noisy, "keyboard": clean}, np.array([1, 1, 2, 2]), {"mixed": np.array([2, 2, 3, 3])}, depth=3)
    assert report["clean_accuracy"] == 1.0 and report["perturbed_accuracy"] == 0.5
    assert report["relative_degradation"] == 0.5
    # The flipped texts score their gold label last, outside even the top 3.
    assert report["nbest_recall@3"] == {"clean": 1.0, "perturbed": 0.5} and "nbest_recall@5" not in report
    assert report["exit_layer_shift"] == 1.0
    assert report["exit_layers"]["clean"] == [0.5, 0.5, 0.0]
    assert report["by_perturbation"]["keyboard"]["relative_degradation"] == 0.0


def test_eraser_removes_or_keeps_the_top_fifth_of_words() -> None:
    text = "my card payment was declined at the shop today again"
    spans, cursor = [], 0
    for word in text.split():
        start = text.index(word, cursor)
        spans.append((start, start + len(word)))
        cursor = start + len(word)
    words = Words(text, spans, np.zeros(0, dtype=np.int64))
    scores = np.zeros(len(spans))
    scores[[1, 4]] = [1.0, 2.0]  # "card", "declined"
    assert top_words(scores) == {1, 4}
    erased = erase(words, scores)
    assert erased.without_top == "my payment was at the shop today again"
    assert erased.only_top == "card declined"
    measured = faithfulness([0.9, 0.8], [0.2, 0.4], [0.85, 0.8])
    assert measured.comprehensiveness == pytest.approx(0.55) and measured.sufficiency == pytest.approx(0.025)
