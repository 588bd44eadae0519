"""The embedding peers' virtual environment, and each peer as a process the bench drives."""

from __future__ import annotations

import hashlib
import json
import subprocess
import venv
from pathlib import Path
from types import TracebackType

import numpy as np
from rich.console import Console

REQUIREMENTS = Path(__file__).with_name("peers.txt")
WORKER = Path(__file__).with_name("peer_worker.py")
PEERS = ("st-onnx", "st-openvino", "fastembed")


def ensure_peers_env(root: Path, console: Console) -> Path:
    """The peers' interpreter, installing .venv-peers from peers.txt when absent or stale."""
    env = root / ".venv-peers"
    python = env / "bin" / "python"
    stamp = env / ".requirements-sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    with console.status(f"installing the peers into {env} (about 2 minutes, once)"):
        venv.create(env, with_pip=True, clear=True)
        install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(REQUIREMENTS)]
        done = subprocess.run(install, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"installing the embedding peers failed:\n{done.stderr[-3000:]}")
    stamp.write_text(wanted)
    return python


class PeerProcess:
    """A peer loaded once in its own process; each round() embeds every text and times it."""

    def __init__(self, python: Path, peer: str, model_dir: Path, cache: Path, texts: Path, threads: int, batch_size: int) -> None:
        self.peer = peer
        self.vectors_path = cache / f"{peer}.npy"
        command = [
            str(python), str(WORKER), "--peer", peer, "--model-dir", str(model_dir), "--cache", str(cache),
            "--texts", str(texts), "--vectors", str(self.vectors_path), "--threads", str(threads),
            "--batch-size", str(batch_size),
        ]  # fmt: skip
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._expect("ready")

    def _expect(self, prefix: str) -> str:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if line.startswith(prefix) or line.startswith("{"):
                return line
        error = self._process.stderr.read() if self._process.stderr else ""
        raise RuntimeError(f"peer {self.peer} stopped: {error[-2000:]}")

    def round(self) -> float:
        """Seconds to embed every text once."""
        assert self._process.stdin is not None
        self._process.stdin.write("round\n")
        self._process.stdin.flush()
        return float(json.loads(self._expect("{"))["seconds"])

    def vectors(self) -> np.ndarray:
        return np.load(self.vectors_path)

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._process.stdin:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
