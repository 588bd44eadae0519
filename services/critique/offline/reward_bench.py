"""The reward model's figures: held-out CommonsenseQA pairwise accuracy of the model trained on
the base pairs and of the one self-trained with West-of-N pairs, and its serving cost in ONNX.

Both models choose their learning rate and epochs on dev; each is measured on test once, here.
The published bundle is the better of the two on dev, not on test.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import TimeRemainingColumn

from services.common.progress import MirroredProgress, counting_columns
from services.critique.backends.reward_model import OnnxRewardModel
from services.critique.offline.reward_data import csqa_pairs, held_out_pairs
from services.critique.offline.reward_training import (
    RewardTrainingConfig,
    WestOfNConfig,
    pairwise_accuracy,
    train_and_publish,
)


def serving_figures(bundle: Path, pairs: list[Any], threads: int = 1) -> dict[str, float]:
    """Test accuracy through the published ONNX graph, and milliseconds per response when each
    pair is scored in one call (two responses to a query), on ``threads`` intra-op threads."""
    model = OnnxRewardModel(bundle, intra_op_threads=threads)
    model.score(pairs[0].query, [pairs[0].chosen, pairs[0].rejected])  # warm-up
    began = time.perf_counter()
    rewards = [model.score(p.query, [p.chosen, p.rejected]) for p in pairs]
    elapsed = time.perf_counter() - began
    return {
        "accuracy": pairwise_accuracy([r[0] for r in rewards], [r[1] for r in rewards]),
        "ms_per_response": 1000 * elapsed / (2 * len(pairs)),
        "threads": threads,
    }


def measure_reward_model(
    models_dir: Path,
    llm_model_path: Path | None = None,
    n: int = 4,
    margin: float = WestOfNConfig.margin,
    west_of_n_queries: int = WestOfNConfig.questions,
    *,
    time_budget_s: float = WestOfNConfig.time_budget_s,
    config: RewardTrainingConfig = RewardTrainingConfig(),
    quiet: bool = False,
) -> dict[str, Any]:
    """Train both models, publish the better on dev, and return JSON-ready figures."""
    west_of_n = WestOfNConfig(n=n, margin=margin, questions=west_of_n_queries, time_budget_s=time_budget_s)
    console = Console(stderr=True, quiet=quiet)
    with MirroredProgress(*counting_columns(), TimeRemainingColumn(), console=console) as progress:
        run = train_and_publish(
            models_dir, config, west_of_n=west_of_n, llm_model_path=llm_model_path, progress=progress
        )
    test = held_out_pairs()
    assert run.west_of_n is not None
    figures: dict[str, Any] = {
        "reward_model_accuracy_base": run.base.scorer.accuracy(test),
        "reward_model_accuracy": run.west_of_n.scorer.accuracy(test),
        "test_pairs": len(test),
        "dev_pairs": len(csqa_pairs("dev")),
        "train_pairs_base": run.base.train_pairs,
        "train_pairs_west_of_n": run.west_of_n.train_pairs,
        "west_of_n_pairs": len(run.west_of_n_pairs),
        "west_of_n_sampling": run.sampling,
        "dev_accuracy_base": run.base.dev_accuracy,
        "dev_accuracy_west_of_n": run.west_of_n.dev_accuracy,
        "hyperparameters_base": run.base.hyperparameters(config),
        "hyperparameters_west_of_n": run.west_of_n.hyperparameters(config),
        "dev_grid_base": run.base.dev_grid,
        "dev_grid_west_of_n": run.west_of_n.dev_grid,
        "training_seconds_base": round(run.base.seconds, 1),
        "training_seconds_west_of_n": round(run.west_of_n.seconds, 1),
        "max_tokens": config.max_tokens,
        "seed": config.seed,
        "published": {"bundle": str(run.published), "kind": run.published_kind, "chosen_on": "dev"},
    }
    serving = serving_figures(run.published, test)
    figures["published"]["test_accuracy_onnx"] = serving["accuracy"]
    figures["serving_ms_per_response"] = round(serving["ms_per_response"], 2)
    figures["serving_threads"] = serving["threads"]
    return figures
