"""Run `rosemesh bench NAME --json` from this tree and from another commit in one session,
alternating (base, this, this, base, ... for --rounds), and print one JSON object: every
numeric figure of both sides (the median over rounds), this tree's over the base's as a ratio,
and the figures that moved more than --tolerance.

    .venv/bin/python tools/bench_side_by_side.py --base main~3 embedding
    .venv/bin/python tools/bench_side_by_side.py --base main~3 experience -- --keep /tmp/pools

The base runs from a git worktree with this tree's virtual environment; its own `services`
and `kernels` packages shadow this tree's because each side runs with its folder as the
working directory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def flatten(value: Any, prefix: str = "") -> dict[str, float]:
    """path → number for every numeric leaf (booleans left out)."""
    if isinstance(value, bool):
        return {}
    if isinstance(value, int | float):
        return {prefix: float(value)}
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {}
    found: dict[str, float] = {}
    for key, item in items:
        found.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return found


def run_bench(tree: Path, name: str, extra: list[str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "services.cli", "bench", name, "--json", *extra]
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {' '.join(command)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(base_runs: list[dict[str, Any]], new_runs: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    base = [flatten(r) for r in base_runs]
    new = [flatten(r) for r in new_runs]
    shared = sorted(set.intersection(*map(set, base + new)))
    figures, moved = {}, {}
    for path in shared:
        b = statistics.median(run[path] for run in base)
        n = statistics.median(run[path] for run in new)
        ratio = n / b if b else (1.0 if n == b else None)
        figures[path] = {"base": b, "new": n, "ratio": None if ratio is None else round(ratio, 4)}
        if ratio is None or abs(ratio - 1) > tolerance:
            moved[path] = figures[path]
    return {"figures": figures, "moved": moved, "compared": len(shared)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the commit to compare against, e.g. main~3")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each side, alternating")
    parser.add_argument("--tolerance", type=float, default=0.10, help="relative change reported as moved")
    parser.add_argument(
        "--rename", action="append", default=[], metavar="OLD=NEW",
        help="a key the base's JSON names OLD and this tree's NEW (e.g. exit_test=exit_rule)",
    )
    parser.add_argument("bench", help="embedding, experience, kernels, earlyexit, ...")
    parser.add_argument("extra", nargs="*", help="flags for `rosemesh bench NAME` (after --)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rosemesh-base-") as scratch:
        worktree = Path(scratch) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.base], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            base_runs, new_runs = [], []
            for round_index in range(args.rounds):
                order = [(worktree, base_runs), (ROOT, new_runs)]
                for tree, runs in order if round_index % 2 == 0 else reversed(order):
                    print(f"round {round_index + 1}: {'base' if tree == worktree else 'this tree'}", file=sys.stderr)
                    runs.append(run_bench(tree, args.bench, args.extra))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False)
    for rename in args.rename:
        old, _, new = rename.partition("=")
        base_runs = [json.loads(json.dumps(run).replace(f'"{old}"', f'"{new}"')) for run in base_runs]
    base_commit = subprocess.run(["git", "rev-parse", args.base], cwd=ROOT, capture_output=True, text=True).stdout
    result = {
        "bench": args.bench,
        "base": base_commit.strip(),
        "rounds": args.rounds,
        "tolerance": args.tolerance,
        **compare(base_runs, new_runs, args.tolerance),
        "runs": {"base": base_runs, "new": new_runs},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
