"""Record: entropy, step counting, majority vote and the demonstration, on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from services.experience.core.experience import experience_id, normalise_question
from services.experience.core.record import ReasoningPath, count_steps, entropy, summarise


def test_steps_are_non_empty_lines() -> None:
    assert count_steps("a\n\n  \nb\nc") == 3
    assert count_steps("one line") == 1
    assert count_steps("") == 0
    assert count_steps("x\r\ny\n") == 2


def test_entropy_in_nats() -> None:
    assert entropy([20]) == 0.0
    assert entropy([10, 10]) == pytest.approx(math.log(2))
    # 12 / 5 / 3 of 20: -(0.6 ln 0.6 + 0.25 ln 0.25 + 0.15 ln 0.15)
    assert entropy([12, 5, 3]) == pytest.approx(0.9376, abs=1e-4)


def test_summary_of_five_paths() -> None:
    paths = [
        ReasoningPath("2 apples\nplus 3\nis 5", "5"),
        ReasoningPath("2+3=5", " 5 "),
        ReasoningPath("guess", "6"),
        ReasoningPath("start with 2\nadd 3\n\ncount\nget 5", "5"),
        ReasoningPath("no idea", "7"),
    ]
    summary = summarise(paths)
    assert summary.answer == "5"
    assert (summary.path_count, summary.majority_count) == (5, 3)
    # answers 5,5,6,5,7 -> p = 0.6, 0.2, 0.2
    assert summary.uncertainty == pytest.approx(-(0.6 * math.log(0.6) + 2 * 0.2 * math.log(0.2)))
    # majority paths have 3, 1 and 4 steps
    assert summary.complexity == pytest.approx(8 / 3)
    assert summary.reasoning == "start with 2\nadd 3\n\ncount\nget 5"


def test_answers_vote_together_across_case_and_spacing() -> None:
    summary = summarise([ReasoningPath("a", "Paris"), ReasoningPath("b", "paris "), ReasoningPath("c", "Lyon")])
    assert summary.majority_count == 2 and summary.answer in ("Paris", "paris")


def test_tied_vote_goes_to_the_answer_seen_first() -> None:
    summary = summarise([ReasoningPath("x\ny", "B"), ReasoningPath("z", "A"), ReasoningPath("w", "A"), ReasoningPath("v", "B")])
    assert summary.answer == "B" and summary.uncertainty == pytest.approx(math.log(2))


def test_longest_path_ties_break_on_characters_then_order() -> None:
    summary = summarise([ReasoningPath("a\nb", "1"), ReasoningPath("aa\nbb", "1"), ReasoningPath("cc\ndd", "1")])
    assert summary.reasoning == "aa\nbb" and summary.uncertainty == 0.0


def test_no_paths_is_an_error() -> None:
    with pytest.raises(ValueError):
        summarise([])


def test_ids_follow_the_normalised_question_and_the_tenant() -> None:
    assert normalise_question("  What  is\t2+2？ ") == "what is 2+2?"
    assert experience_id("acme", "What is 2+2?") == experience_id("acme", " what IS 2+2? ")
    assert experience_id("acme", "What is 2+2?") != experience_id("other", "What is 2+2?")
