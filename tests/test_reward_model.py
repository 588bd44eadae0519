"""The critique service's reward model: CommonsenseQA preference splits, the Bradley-Terry loss,
West-of-N selection, and a tiny model trained, exported, published and served through ONNX."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.critique.offline.reward_data import (
    SPLITS,
    csqa_pairs,
    csqa_questions,
    held_out_pairs,
    split_of,
)
from services.offline.datasets import MultipleChoiceQuestion, commonsense_qa

torch = pytest.importorskip("torch")

from services.critique.offline.reward_training import (  # noqa: E402 - needs torch
    answer_as_response,
    bradley_terry_loss,
    pairwise_accuracy,
    west_of_n_pairs,
)


def test_splits_are_by_question_disjoint_and_cover_the_data_set() -> None:
    by_split = {split: {q.question for q in csqa_questions(split)} for split in SPLITS}
    assert not by_split["train"] & by_split["dev"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["dev"] & by_split["test"]
    assert set().union(*by_split.values()) == {q.question for q in commonsense_qa()}
    assert len(by_split["test"]) >= 200
    for split, questions in by_split.items():
        assert {p.query for p in csqa_pairs(split)} == questions


def test_the_split_depends_on_the_question_text_only() -> None:
    questions = commonsense_qa()
    forwards = [split_of(q.question) for q in questions]
    backwards = [split_of(q.question) for q in reversed(questions)]
    assert forwards == backwards[::-1]
    assert {split_of(q.question) for q in questions} == set(SPLITS)


def test_train_pairs_every_wrong_option_and_held_out_pairs_one_per_question() -> None:
    right = {q.question: q.options[q.answer] for q in commonsense_qa()}
    train = csqa_pairs("train")
    assert len(train) == 4 * len(csqa_questions("train"))
    for split in ("dev", "test"):
        pairs = csqa_pairs(split)
        assert len(pairs) == len({p.query for p in pairs}) == len(csqa_questions(split))
        assert all(p.chosen == right[p.query] != p.rejected for p in pairs)
    assert held_out_pairs() == csqa_pairs("test")


def test_held_out_pairs_are_stable_prefixes() -> None:
    assert held_out_pairs(5) == held_out_pairs(5) == held_out_pairs(50)[:5]


def test_bradley_terry_loss() -> None:
    zero = torch.zeros(3)
    assert float(bradley_terry_loss(zero, zero)) == pytest.approx(math.log(2))
    assert float(bradley_terry_loss(torch.tensor([20.0]), torch.tensor([0.0]))) < 1e-8
    chosen = torch.tensor([0.5], requires_grad=True)
    bradley_terry_loss(chosen, torch.tensor([1.0])).backward()
    assert chosen.grad is not None and float(chosen.grad) < 0  # descent raises the chosen reward


def test_pairwise_accuracy_counts_a_tie_as_a_miss() -> None:
    assert pairwise_accuracy([1.0, 2.0, 3.0, 0.0], [0.0, 2.0, 4.0, -1.0]) == 0.5
    with pytest.raises(ValueError):
        pairwise_accuracy([1.0], [])


QUESTION = MultipleChoiceQuestion(
    "Where would you keep money?", {"A": "bank", "B": "river bank", "C": "shoe", "D": "sky", "E": "oven"}, "A"
)


@pytest.mark.parametrize(
    ("answer", "response"),
    [
        ("A", "bank"),
        ("(C) shoe", "shoe"),
        ("The answer is: D. sky", "sky"),
        ("river bank.", "river bank"),
        ("You keep it in a river bank", "river bank"),
        ("under the mattress, of course, where nobody looks", "under the mattress, of course, where nobody looks"),
        ("a mattress", "a mattress"),
    ],
)
def test_llm_answers_map_to_option_texts(answer: str, response: str) -> None:
    assert answer_as_response(answer, QUESTION) == response


class LengthScorer:
    """Rewards longer responses."""

    def score(self, query: str, responses: list[str]) -> np.ndarray:
        return np.asarray([len(r) for r in responses], dtype=np.float32)


async def test_west_of_n_keeps_best_and_worst_above_the_margin() -> None:
    samples = {"q1": ["ab", "abcdef", "abc", "abcdef"], "q2": ["abc", "abcd"], "q3": ["same", "same"]}
    questions = [MultipleChoiceQuestion(q, {"A": "x"}, "A") for q in samples]

    async def sample(question: MultipleChoiceQuestion, n: int) -> list[str]:
        return samples[question.question][:n]

    pairs = await west_of_n_pairs(LengthScorer(), questions, sample, n=4, margin=2.0)
    assert [(p.query, p.chosen, p.rejected) for p in pairs] == [("q1", "abcdef", "ab")]


async def test_a_tiny_model_trains_publishes_and_serves_like_torch(tmp_path) -> None:
    from services.critique.backends.reward_model import load_reward_model
    from services.critique.offline.reward_training import publish_reward_model, train_reward_model

    train, dev = csqa_pairs("train")[:8], csqa_pairs("dev")[:4]
    trained = train_reward_model(train, dev, epochs=1, lr=5e-5, batch_size=8, max_tokens=24, seed=0)
    assert trained.epochs == 1 and 0.0 <= trained.dev_accuracy <= 1.0
    bundle = publish_reward_model(trained, tmp_path, dev, {"kind": "base"})
    assert bundle.name == "1"
    model = load_reward_model(tmp_path)
    assert model is not None and model.model == "reward-model@1"
    assert model.meta["max_tokens"] == 24

    pair = held_out_pairs(1)[0]
    responses = [pair.chosen, pair.rejected, "a much longer answer that pads the others " * 3]
    served = await model.rewards(pair.query, responses)
    expected = trained.scorer.score(pair.query, responses)
    assert all(math.isfinite(r) for r in served)
    assert np.abs(np.asarray(served) - expected).max() < 1e-4
    assert np.argsort(served).tolist() == np.argsort(expected).tolist()
    assert publish_reward_model(trained, tmp_path, dev, {"kind": "base"}).name == "2"
