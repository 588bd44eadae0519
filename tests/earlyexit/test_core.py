"""Exit policies, the batch-shrinking cascade, FLOP counts and HashEE's token hash."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.exit_cascade import ExitRule, WirePolicy
from services.common.errors import InvalidInput
from services.earlyexit.core.flops import EncoderShape
from services.earlyexit.core.policy import (
    MODE_CODES,
    ExitMode,
    ExitPolicy,
    ModelKind,
    entropy,
    policy_to_wire,
    resolve_policy,
    run_cascade,
    softmax,
)
from services.earlyexit.offline.train import build_exit_table

DEPTH = 6
DEFAULT = ExitPolicy(ExitMode.DYNAMIC, entropy_threshold=0.2)


def resolve(policy: ExitPolicy | None, kind: ModelKind = ModelKind.MULTI_EXIT, labels: int = 2) -> ExitPolicy:
    return resolve_policy(policy, kind=kind, depth=DEPTH, num_labels=labels, default=DEFAULT)


def test_policy_defaults_are_filled_in() -> None:
    assert resolve(None) == DEFAULT
    assert resolve(ExitPolicy(ExitMode.DYNAMIC)).entropy_threshold == 0.2
    assert resolve(ExitPolicy(ExitMode.PATIENCE)).patience == 2


@pytest.mark.parametrize(
    ("policy", "kind", "field", "words"),
    [
        (ExitPolicy(ExitMode.STATIC, static_layer=7), ModelKind.MULTI_EXIT, "policy.static_layer", "depth 6"),
        (ExitPolicy(ExitMode.STATIC, static_layer=0), ModelKind.MULTI_EXIT, "policy.static_layer", "got 0"),
        (
            ExitPolicy(ExitMode.DYNAMIC, entropy_threshold=0.0),
            ModelKind.MULTI_EXIT,
            "policy.entropy_threshold",
            "above 0",
        ),
        (
            ExitPolicy(ExitMode.DYNAMIC, entropy_threshold=0.8),
            ModelKind.MULTI_EXIT,
            "policy.entropy_threshold",
            "ln(2)",
        ),
        (
            ExitPolicy(ExitMode.DYNAMIC, entropy_threshold=math.nan),
            ModelKind.MULTI_EXIT,
            "policy.entropy_threshold",
            "nan",
        ),
        (ExitPolicy(ExitMode.PATIENCE, patience=9), ModelKind.MULTI_EXIT, "policy.patience", "between 1 and"),
        (ExitPolicy(ExitMode.HASHEE), ModelKind.MULTI_EXIT, "policy.mode", "not hashee"),
        (ExitPolicy(ExitMode.STATIC, static_layer=2), ModelKind.HASHEE, "policy.mode", "support hashee"),
    ],
)
def test_out_of_range_policies_name_the_field(
    policy: ExitPolicy, kind: ModelKind, field: str, words: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        resolve(policy, kind)
    assert caught.value.violations[0].field == field
    assert words in caught.value.message


@pytest.mark.parametrize(
    "policy",
    [
        ExitPolicy(ExitMode.STATIC, static_layer=3),
        ExitPolicy(ExitMode.DYNAMIC, entropy_threshold=0.123456789),
        ExitPolicy(ExitMode.PATIENCE, patience=2),
        ExitPolicy(ExitMode.HASHEE),
    ],
)
def test_policies_reach_the_cascade_as_four_numbers(policy: ExitPolicy) -> None:
    wire = WirePolicy(*policy_to_wire(policy))
    assert wire.mode == MODE_CODES[policy.mode]
    assert (wire.static_layer, wire.entropy_threshold, wire.patience) == (
        policy.static_layer or 0,
        policy.entropy_threshold or 0.0,
        policy.patience or 0,
    )
    if policy.mode is ExitMode.HASHEE:  # one graph, no layers to exit at
        with pytest.raises(ValueError, match="layer-wise"):
            wire.check(6)
    else:
        wire.check(6)


def test_entropy_is_in_nats() -> None:
    assert entropy(np.array([[0.5, 0.5]]))[0] == pytest.approx(math.log(2))
    assert entropy(softmax(np.array([[100.0, 0.0]])))[0] == pytest.approx(0.0, abs=1e-12)


def test_patience_counts_unchanged_predictions() -> None:
    rule = ExitRule(WirePolicy(*policy_to_wire(ExitPolicy(ExitMode.PATIENCE, patience=2))), DEPTH, rows=2)
    rows = np.array([0, 1])
    a, b = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    assert not rule.exits(1, rows, np.vstack([a, a])).any()
    assert not rule.exits(2, rows, np.vstack([a, b])).any()  # row 0 unchanged once, row 1 changed
    assert rule.exits(3, rows, np.vstack([a, b])).tolist() == [True, False]
    assert rule.exits(4, rows[1:], b).tolist() == [True]


def test_the_last_layer_always_exits() -> None:
    rule = ExitRule(WirePolicy(*policy_to_wire(ExitPolicy(ExitMode.DYNAMIC, entropy_threshold=1e-9))), DEPTH, rows=1)
    assert rule.exits(DEPTH, np.array([0]), np.array([[0.0, 0.0]])).tolist() == [True]


class ToySegments:
    """A deterministic stand-in for exported segments (this tests the loop, not a model): each
    layer adds a row-specific amount to every hidden token, and the logits read token 0."""

    def __init__(self, labels: int = 3) -> None:
        self.labels = labels
        self.batch_sizes: list[int] = []

    def __call__(self, index: int, inputs: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.batch_sizes.append(len(inputs))
        if index == 0:
            hidden = np.repeat(inputs[:, :, None].astype(np.float32), self.labels, axis=2)
        else:
            hidden = inputs
        valid = mask[:, :, None].astype(np.float32)
        summary = (hidden * valid).sum(axis=1) / valid.sum(axis=1)
        hidden = hidden + np.sin(summary * (index + 1))[:, None, :] * (index + 1)
        logits = hidden[:, 0, :] * np.arange(1, self.labels + 1)
        return hidden, logits.astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=10),
    seed=st.integers(0, 10_000),
    mode=st.sampled_from([ExitMode.STATIC, ExitMode.DYNAMIC, ExitMode.PATIENCE]),
)
def test_a_shrinking_batch_decides_like_one_row_at_a_time(
    lengths: list[int], seed: int, mode: ExitMode
) -> None:
    rng = np.random.default_rng(seed)
    width = max(lengths)
    ids = np.zeros((len(lengths), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(1, 50, length)
        mask[row, :length] = 1
    policy = {
        ExitMode.STATIC: ExitPolicy(mode, static_layer=int(rng.integers(1, DEPTH + 1))),
        ExitMode.DYNAMIC: ExitPolicy(mode, entropy_threshold=float(rng.uniform(0.05, 1.0))),
        ExitMode.PATIENCE: ExitPolicy(mode, patience=int(rng.integers(1, 4))),
    }[mode]
    segments = ToySegments()
    batched = run_cascade(segments, ids, mask, policy, DEPTH)
    for row, length in enumerate(lengths):
        alone = run_cascade(
            ToySegments(), ids[row : row + 1, :length], mask[row : row + 1, :length], policy, DEPTH
        )
        assert batched.exit_layers[row] == alone.exit_layers[0]
        np.testing.assert_allclose(batched.logits[row], alone.logits[0], rtol=1e-5, atol=1e-5)
    # Rows leave: no later layer runs on more rows than the one before it.
    assert segments.batch_sizes == sorted(segments.batch_sizes, reverse=True)


def test_static_exit_runs_exactly_n_layers() -> None:
    segments = ToySegments()
    ids = np.ones((4, 5), dtype=np.int64)
    result = run_cascade(segments, ids, np.ones_like(ids), ExitPolicy(ExitMode.STATIC, static_layer=3), DEPTH)
    assert result.exit_layers.tolist() == [3, 3, 3, 3]
    assert segments.batch_sizes == [4, 4, 4]


SHAPE = EncoderShape(hidden=384, ffn=1536, num_labels=2)


def test_flops_of_a_full_layer() -> None:
    d, f, t = 384, 1536, 10
    expected = 2 * t * (4 * d * d + 2 * d * f) + 4 * t * t * d
    assert SHAPE.layer(t) == expected


def test_hashee_with_every_token_at_the_top_costs_the_full_model() -> None:
    tokens = np.full(12, DEPTH)
    assert SHAPE.hashee(tokens, DEPTH) == DEPTH * SHAPE.layer(12) + SHAPE.head
    early = tokens.copy()
    early[1:-1] = 1
    assert SHAPE.hashee(early, DEPTH) < SHAPE.hashee(tokens, DEPTH)


def test_multi_exit_flops_grow_with_the_exit_layer() -> None:
    costs = [SHAPE.multi_exit(20, layer) for layer in range(1, DEPTH + 1)]
    assert costs == sorted(costs) and costs[0] == SHAPE.layer(20) + SHAPE.head


def test_frequency_hash_sends_frequent_tokens_out_first() -> None:
    corpus = [np.array([101, 5, 5, 5, 5, 6, 6, 6, 7, 7, 8, 9, 10, 11, 102])]
    table = build_exit_table(
        corpus, vocab_size=200, depth=3, special_ids=[0, 100, 101, 102, 103], hash_kind="frequency"
    )
    assert table[5] == 1 and table[6] == 1  # the two most frequent of the seven seen tokens
    assert table[[101, 102, 0, 150]].tolist() == [3, 3, 3, 3]  # special and unseen exit at the top
    seen = [5, 6, 7, 8, 9, 10, 11]
    assert sorted(np.bincount(table[seen])[1:].tolist()) == [2, 2, 3]  # equal buckets


def test_random_hash_is_seeded_and_covers_every_layer() -> None:
    corpus = [np.arange(1000, 1600)]
    first = build_exit_table(corpus, 2000, 6, [0], "random", seed=3)
    assert np.array_equal(first, build_exit_table(corpus, 2000, 6, [0], "random", seed=3))
    assert set(first[1000:1600].tolist()) == {1, 2, 3, 4, 5, 6}
    with pytest.raises(ValueError, match="unknown hash"):
        build_exit_table(corpus, 2000, 6, [0], "alphabetical")


def test_a_later_first_layer_keeps_every_token_longer() -> None:
    corpus = [np.arange(1000, 1600).repeat(2)]
    table = build_exit_table(corpus, 2000, 6, [0], "frequency", first_layer=3)
    assert set(table[1000:1600].tolist()) == {3, 4, 5, 6}
    with pytest.raises(ValueError, match="first_layer"):
        build_exit_table(corpus, 2000, 6, [0], "frequency", first_layer=7)


def test_the_bench_chooses_operating_points_on_dev_and_only_measures_them_on_test() -> None:
    """Dev and test order the points differently: the choice follows dev, and the headline is the
    dev-chosen point's test figures, even where another point looks better on test."""
    from services.earlyexit.offline.bench import Measured, Point, choose_operating_points, summarise

    static = [ExitPolicy(ExitMode.STATIC, static_layer=layer) for layer in (2, 4, 6)]
    points = [
        Point("m-plain", static[2], ModelKind.PLAIN),
        *(Point("m", policy, ModelKind.MULTI_EXIT) for policy in static),
        Point("m-hashee-a", ExitPolicy(ExitMode.HASHEE), ModelKind.HASHEE),
        Point("m-hashee-b", ExitPolicy(ExitMode.HASHEE), ModelKind.HASHEE),
    ]

    def measured(accuracy: float, flops: float, rate: float) -> Measured:
        return Measured(accuracy, 0.0, flops, [rate, rate * 1.1, rate * 0.9])

    #                     plain             static-2          static-4          static-6          hashee-a          hashee-b
    dev = [measured(0.90, 60, 1), measured(0.85, 20, 1), measured(0.895, 40, 1), measured(0.90, 61, 1), measured(0.80, 30, 1), measured(0.893, 45, 1)]
    test = [measured(0.90, 60, 100), measured(0.90, 20, 300), measured(0.87, 40, 150), measured(0.90, 61, 95), measured(0.90, 30, 120), measured(0.88, 45, 110)]  # fmt: skip
    chosen = choose_operating_points(points, dev)
    # On test, static-2 and hashee-a would win; on dev they are more than a point below plain.
    assert (chosen.plain, chosen.full, chosen.layer_wise, chosen.hashee) == (0, 3, 2, 5)
    report = summarise("m", points, dev, test, chosen)
    assert report["chosen_on"] == "dev" and report["speedup_at_1pt_policy"] == "static-4"
    assert report["speedup_at_1pt"] == 1.5 and report["speedup_at_1pt_accuracy"] == 0.87  # as measured on test
    assert report["speedup_at_1pt_spread"] == [1.5, 1.5]
    assert report["hashee_at_1pt_model"] == "m-hashee-b" and report["hashee_flops_ratio_at_1pt"] == round(60 / 45, 3)
    assert [row["chosen"] for row in report["points"]] == [False, False, True, False, False, True]


def test_no_point_within_a_point_of_plain_on_dev_reports_none() -> None:
    from services.earlyexit.offline.bench import Measured, Point, choose_operating_points, summarise

    points = [
        Point("m-plain", ExitPolicy(ExitMode.STATIC, static_layer=6), ModelKind.PLAIN),
        Point("m", ExitPolicy(ExitMode.STATIC, static_layer=6), ModelKind.MULTI_EXIT),
    ]
    dev = [Measured(0.9, 0, 60, [1.0] * 3), Measured(0.8, 0, 61, [1.0] * 3)]
    chosen = choose_operating_points(points, dev)
    assert chosen.layer_wise is None and chosen.hashee is None
    report = summarise("m", points, dev, dev, chosen)
    assert report["speedup_at_1pt"] is None and report["hashee_speedup_at_1pt"] is None


@pytest.mark.parametrize("name", ["rotten_tomatoes", "banking77", "clinc150", "hwu64", "stackoverflow"])
def test_every_classification_data_set_loads_three_labelled_splits(name: str) -> None:
    from services.offline.datasets import CLASSIFICATION_DATASETS

    splits = CLASSIFICATION_DATASETS[name]()
    assert min(len(splits.train), len(splits.dev), len(splits.test)) >= 500
    for split in (splits.train, splits.dev, splits.test):
        assert {row.label for row in split} <= set(splits.labels) and all(row.text for row in split)
    assert len({row.label for row in splits.test}) == len(splits.labels)


def test_the_training_plan_skips_published_models_and_counts_their_steps(tmp_path) -> None:
    from services.common.model_versions import ModelVersions
    from services.earlyexit.core.bundle import models_root
    from services.earlyexit.offline.train import TrainConfig, training_plan

    config = TrainConfig(epochs=1.5, train_limit=640)
    planned = training_plan("rotten_tomatoes", tmp_path, ("plain", "multiexit"), config)
    assert [p.name for p in planned] == ["rotten_tomatoes-plain", "rotten_tomatoes"]
    assert {p.steps for p in planned} == {30}  # 640 examples / 32 a batch × 1.5 epochs
    with ModelVersions(models_root(tmp_path)).publish("rotten_tomatoes-plain", planned[0].version) as directory:
        (directory / "manifest.json").write_text("{}")
    assert [p.name for p in training_plan("rotten_tomatoes", tmp_path, ("plain", "multiexit"), config)] == [
        "rotten_tomatoes"
    ]
    # Another configuration is another version: nothing is reused.
    assert len(training_plan("rotten_tomatoes", tmp_path, ("plain",), TrainConfig(train_limit=320))) == 1


def test_the_bench_refuses_training_over_its_time_cap(tmp_path, monkeypatch) -> None:
    from rich.console import Console

    from services.earlyexit.offline import bench
    from services.earlyexit.offline.train import TrainConfig

    monkeypatch.setattr(bench, "seconds_per_step", lambda dataset, config: 0.5)
    config = TrainConfig(epochs=1, train_limit=3200)  # 100 steps for each of the six variants
    quiet = Console(quiet=True)
    estimate = bench.check_training_time(["rotten_tomatoes"], tmp_path, config, 10.0, quiet)
    assert len(estimate.models) == 6 and estimate.minutes == pytest.approx(6 * 100 * 0.5 / 60)
    with pytest.raises(bench.TrainingTooLong, match="about 5 min, over the 2 min cap"):
        bench.check_training_time(["rotten_tomatoes"], tmp_path, config, 2.0, quiet)


def test_multi_exit_epochs_change_only_the_multi_exit_model(tmp_path) -> None:
    from services.earlyexit.offline.train import TrainConfig, _version, training_plan

    longer = TrainConfig(multiexit_epochs=4.0, train_limit=640)
    base = TrainConfig(train_limit=640)
    assert _version(longer, "banking77", "plain") == _version(base, "banking77", "plain")
    assert _version(longer, "banking77", "multiexit") != _version(base, "banking77", "multiexit")
    assert _version(longer, "banking77", "multiexit") == _version(TrainConfig(epochs=4.0, train_limit=640), "banking77", "multiexit")
    steps = {p.name: p.steps for p in training_plan("banking77", tmp_path, ("plain", "multiexit"), longer)}
    assert steps == {"banking77-plain": 40, "banking77": 80}


def test_default_model_training_takes_every_example_or_at_least_a_batch() -> None:
    from pydantic import ValidationError

    from services.earlyexit.server import EarlyExitSettings

    assert EarlyExitSettings().train_examples == 0  # every training example
    assert EarlyExitSettings(train_examples=64).train_examples == 64
    with pytest.raises(ValidationError, match="at least 32"):
        EarlyExitSettings(train_examples=5)
