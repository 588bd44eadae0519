"""Time the experience service of this tree and of another commit side by side on one kept pool,
through this tree's client: what `tools/bench_side_by_side.py` cannot do where the other commit's
own benchmark would rebuild the pool first (the 1M pool before issue 19 needed an HNSW index).

    .venv/bin/python tools/bench_experience_service_side_by_side.py --base ab0b239 \
        --pool /work/pools/pool-1000000 --base-flag=--hnsw-threshold=1000000000

Each side serves the pool in turn (base, this tree, then the reverse for --rounds 2), answering
the same held-out questions for exact and sublinear RoSE and SIMILARITY_TOPK after it has loaded
and partitioned the pool; prints one JSON object of both sides' p50/p99 and their ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rosemesh.experience.v1 import experience_pb2 as pb

from services.common.net import free_port
from services.experience.offline.bench import HELD_OUT, _agreement, _measure
from services.offline.datasets import commonsense_qa
from services.supervisor import MAKE_BUNDLES_ENV, service_process, wait_until_serving

ROOT = Path(__file__).resolve().parents[1]


def serve(tree: Path, flags: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "services.cli", "serve", "experience", "--host", "127.0.0.1",
               "--port", str(port), "--metrics-port", str(free_port()), *flags]  # fmt: skip
    process = subprocess.Popen(command, cwd=tree, env={**os.environ, MAKE_BUNDLES_ENV: "0"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    address = f"127.0.0.1:{port}"
    wait_until_serving(address, process, 1800.0, None)
    return process, address


def measure(address: str, queries: list[str], k: int) -> dict[str, float]:
    asyncio.run(_measure(address, queries[:1], k, pb.STRATEGY_ROSE, pb.SEARCH_MODE_SUBLINEAR))  # loaded, partitioned
    exact, exact_picks = asyncio.run(_measure(address, queries, k, pb.STRATEGY_ROSE))
    sub, sub_picks = asyncio.run(_measure(address, queries, k, pb.STRATEGY_ROSE, pb.SEARCH_MODE_SUBLINEAR))
    topk, _ = asyncio.run(_measure(address, queries, k, pb.STRATEGY_SIMILARITY_TOPK))
    return {
        **{f"rose_exact_{key}": v for key, v in exact.items()},
        **{f"rose_sublinear_{key}": v for key, v in sub.items()},
        "rose_sublinear_agreement": _agreement(exact_picks, sub_picks),
        **{f"similarity_topk_{key}": v for key, v in topk.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True)
    parser.add_argument("--pool", type=Path, required=True, help="a data directory the experience bench kept")
    parser.add_argument("--base-flag", action="append", default=[], help="a flag only the base's service takes")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    queries = [q.prompt() for q in commonsense_qa()[-HELD_OUT:]][: args.queries]
    runs: dict[str, list[dict[str, float]]] = {"base": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="rosemesh-base-") as scratch, service_process(
        "embedding", ["--no-fast"]
    ) as embedding:
        worktree = Path(scratch) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.base], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        try:
            for round_index in range(args.rounds):
                order = [("base", worktree), ("new", ROOT)]
                for side, tree in order if round_index % 2 == 0 else reversed(order):
                    print(f"round {round_index + 1}: {side}", file=sys.stderr)
                    flags = ["--embedding-target", embedding.address, "--data-dir", str(args.pool)]
                    process, address = serve(tree, flags + (args.base_flag if side == "base" else []))
                    try:
                        runs[side].append(measure(address, queries, args.k))
                    finally:
                        process.terminate()
                        process.wait(timeout=60)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False)
    figures = {}
    for key in runs["new"][0]:
        base, new = (statistics.median(r[key] for r in runs[side]) for side in ("base", "new"))
        figures[key] = {"base": base, "new": new, "ratio": round(new / base, 4) if base else None}
    print(json.dumps({"bench": "experience service", "pool": str(args.pool), "figures": figures, "runs": runs}))


if __name__ == "__main__":
    main()
