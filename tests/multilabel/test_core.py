"""Multi-label core: F1, per-label thresholds, the weighted loss and the meta-learner."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from services.multilabel.core.scoring import THRESHOLD_GRID, apply_thresholds, f1_scores, tune_thresholds
from services.multilabel.offline.train import WEIGHT_CHOICES, MetaLearner, weighted_bce

TRUTH = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
PREDICTED = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0], [0, 0, 0]])


def test_f1_by_hand() -> None:
    # label 0: tp 2 fp 0 fn 0 → 1; label 1: tp 1 fp 0 fn 1 → 2/3; label 2: tp 0 fp 1 fn 1 → 0.
    scores = f1_scores(TRUTH, PREDICTED)
    assert scores.per_label_f1 == pytest.approx([1.0, 2 / 3, 0.0])
    assert scores.macro_f1 == pytest.approx((1 + 2 / 3 + 0) / 3)
    # micro: tp 3, fp 1, fn 2 → 6 / (6 + 3).
    assert scores.micro_f1 == pytest.approx(6 / 9)
    assert scores.micro_precision == pytest.approx(3 / 4) and scores.micro_recall == pytest.approx(3 / 5)


def test_a_label_never_present_nor_predicted_counts_as_perfect() -> None:
    assert f1_scores(np.zeros((3, 1)), np.zeros((3, 1))).macro_f1 == 1.0


def test_thresholds_apply_per_label() -> None:
    probabilities = np.array([[0.3, 0.3, 0.9], [0.7, 0.1, 0.5]])
    chosen = apply_thresholds(probabilities, np.array([0.25, 0.5, 0.5]))
    assert chosen.tolist() == [[True, False, True], [True, False, True]]


def test_tuned_thresholds_find_the_best_cut_per_label() -> None:
    probabilities = np.array([[0.2, 0.9], [0.3, 0.8], [0.1, 0.2], [0.05, 0.4]])
    truth = np.array([[1, 1], [1, 1], [0, 0], [0, 0]])
    thresholds = tune_thresholds(probabilities, truth)
    assert 0.1 < thresholds[0] <= 0.2 and 0.4 < thresholds[1] <= 0.8
    assert f1_scores(truth, apply_thresholds(probabilities, thresholds)).macro_f1 == 1.0


@settings(max_examples=60, deadline=None)
@given(
    probabilities=arrays(np.float64, (6, 4), elements=st.floats(0, 1)),
    low=st.floats(0, 1),
    delta=st.floats(0, 1),
)
def test_predictions_are_monotone_in_the_threshold(
    probabilities: np.ndarray, low: float, delta: float
) -> None:
    high = min(1.0, low + delta)
    loose = apply_thresholds(probabilities, np.full(4, low))
    strict = apply_thresholds(probabilities, np.full(4, high))
    assert not (strict & ~loose).any()  # raising a threshold never adds a label


def test_weighted_loss_scales_each_label() -> None:
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    weighted = weighted_bce(logits, targets, torch.tensor([2.0, 0.5]))
    assert float(weighted) == pytest.approx(float((plain[:, 0] * 2 + plain[:, 1] * 0.5).mean()))
    assert float(weighted_bce(logits, targets, torch.ones(2))) == pytest.approx(float(plain.sum(1).mean()))


def test_meta_learner_emits_one_weight_and_threshold_per_label() -> None:
    torch.manual_seed(0)
    learner = MetaLearner(num_labels=5, hidden=8)
    episode = learner()
    assert episode.weight_actions.shape == episode.threshold_actions.shape == (5,)
    assert episode.weight_log_probs.shape == episode.threshold_log_probs.shape == (5,)
    assert (episode.threshold_log_probs < 0).all() and episode.entropy.item() > 0
    decoded_weights, decoded_thresholds = learner.decode(episode.weight_actions, episode.threshold_actions)
    assert set(decoded_weights) <= set(WEIGHT_CHOICES)
    assert all(any(abs(t - g) < 1e-6 for g in THRESHOLD_GRID) for t in decoded_thresholds)
    episode.threshold_log_probs.sum().backward()
    assert learner.cell.weight_ih.grad is not None  # the policy is differentiable end to end


def test_meta_learner_starts_near_the_plain_policy_and_samples_around_it() -> None:
    torch.manual_seed(0)
    learner = MetaLearner(num_labels=4, hidden=8)
    with torch.no_grad():
        episode = learner(greedy=True)
        greedy = learner.decode(episode.weight_actions, episode.threshold_actions)
        samples = [tuple(learner().threshold_actions.tolist()) for _ in range(50)]
    assert np.all(greedy[0] == 1.0) and np.allclose(greedy[1], 0.5)
    assert len(set(samples)) > 1  # sampling explores


def test_reinforce_moves_the_policy_towards_rewarded_actions() -> None:
    torch.manual_seed(0)
    learner = MetaLearner(num_labels=2, hidden=8)
    optimizer = torch.optim.Adam(learner.parameters(), lr=0.05)
    target = int(np.argmin(np.abs(THRESHOLD_GRID - 0.8)))
    for _ in range(60):
        episodes = [learner() for _ in range(8)]
        rewards = torch.tensor([float((e.threshold_actions == target).float().mean()) for e in episodes])
        loss = -sum(
            (r - rewards.mean()) * e.threshold_log_probs.sum() for r, e in zip(rewards, episodes, strict=True)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        final = learner(greedy=True)
    assert final.threshold_actions.tolist() == [target, target]
