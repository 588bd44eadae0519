"""Run the real Triton Inference Server shipped inside the ``nvidia-pytriton`` wheel.

The wheel carries a ``tritonserver`` binary and the python backend only, so local and CI
model repositories serve the ``.onnx`` files through python-backend wrappers, while the
production profile uses the onnxruntime backend of a full Triton install. DESIGN.md
("Triton Inference Server") records how the binary must be launched.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import signal
import string
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

import deploy
from services.common.net import free_port

Profile = Literal["local", "production"]
PROFILES: tuple[Profile, ...] = ("local", "production")
#: Model repository templates, one folder per model (``embedding``, ...): ``deploy/triton`` in a
#: checkout, shipped in the wheel as package data of ``deploy``.
TEMPLATES_DIR = Path(deploy.__file__).resolve().parent / "triton"
#: Python-backend model that serves any single ``.onnx`` graph with ONNX Runtime.
ONNX_WRAPPER = TEMPLATES_DIR / "onnx_model.py"


class TritonError(RuntimeError):
    """Triton cannot be located, staged or started here."""


@dataclass(frozen=True)
class TritonDistribution:
    """The server files inside the installed wheel."""

    root: Path  # <site-packages>/pytriton/tritonserver
    libs: Path  # <site-packages>/nvidia_pytriton.libs

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        return self.root / "backends" / "python"

    @property
    def stub(self) -> Path:
        """The python backend stub built for this interpreter's version."""
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return self.root / "python_backend_stubs" / version / "triton_python_backend_stub"


def find_distribution() -> TritonDistribution:
    """Locate the wheel's server files without importing pytriton; raise TritonError if absent."""
    if sys.platform != "linux":
        raise TritonError(f"the tritonserver in nvidia-pytriton runs on Linux only, not {sys.platform}")
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonError("nvidia-pytriton is not installed")
    package = Path(next(iter(spec.submodule_search_locations)))
    dist = TritonDistribution(root=package / "tritonserver", libs=package.parent / "nvidia_pytriton.libs")
    for path in (dist.binary, dist.python_backend, dist.stub, dist.libs):
        if not path.exists():
            raise TritonError(f"nvidia-pytriton is incomplete or lacks a stub for this Python: {path}")
    # The stub links libpython dynamically; a static-only interpreter cannot run python models.
    libdir, soname = sysconfig.get_config_var("LIBDIR") or "", sysconfig.get_config_var("INSTSONAME") or ""
    libpython = Path(libdir) / soname
    if not libpython.is_file():
        raise TritonError(f"the python backend stub needs a shared libpython, not found at {libpython}")
    return dist


def triton_env(
    dist: TritonDistribution, base: Mapping[str, str] | None = None, python_prefix: Path | None = None
) -> dict[str, str]:
    """Environment for tritonserver and its python backend stubs.

    The copied stub and backend lose their RPATH into the wheel's bundled libraries, and without
    the interpreter's LIBDIR first the stub picks up the system libpython instead of ours.
    A virtual environment's bin goes first on PATH so that the stub's embedded interpreter
    resolves its site-packages: this one's, or ``python_prefix``'s (a venv of the same Python).
    """
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(dist.libs), libdir, env.get("LD_LIBRARY_PATH", "")) if p
    )
    prefix = python_prefix or Path(sys.prefix)
    env["PATH"] = os.pathsep.join(p for p in (str(prefix / "bin"), env.get("PATH", "")) if p)
    return env


@functools.cache
def triton_unavailable_reason() -> str | None:
    """Why the wheel's tritonserver cannot run here, or None when it can (for test skips)."""
    try:
        dist = find_distribution()
    except TritonError as exc:
        return str(exc)
    if importlib.util.find_spec("tritonclient.grpc") is None:
        return "tritonclient[grpc] is not installed"
    try:
        probe = subprocess.run(
            [str(dist.binary), "--help"], env=triton_env(dist), capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"tritonserver cannot be executed: {exc}"
    # --help exits 1 by design; the usage text proves the binary and its libraries load.
    if "Usage: tritonserver" not in probe.stdout + probe.stderr:
        return f"tritonserver does not start ({probe.returncode}): {(probe.stderr or probe.stdout)[-500:]}"
    return None


def stage_backends(work_dir: Path, dist: TritonDistribution | None = None) -> Path:
    """Build a ``--backend-directory`` under ``work_dir``: the python backend plus its stub.

    The stub must sit inside ``backends/python``, which the wheel keeps elsewhere, so the wheel's
    tree is copied rather than modified in place. The binary itself runs in place: its RPATH
    finds the wheel's bundled libraries from there.
    """
    dist = dist or find_distribution()
    backends = work_dir / "backends"
    python = backends / "python"
    shutil.copytree(
        dist.python_backend, python, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
    )
    shutil.copy2(dist.stub, python / dist.stub.name)
    return backends


# glog's error prefix, e.g. "E1123 00:42:08.742291 5749 model_lifecycle.cc:642] ...".
_ERROR_LINE = re.compile(r"^E\d{4} ")


class TritonServer:
    """A ``tritonserver`` process serving one model repository over gRPC on ``host``.

    HTTP and metrics stay off unless given a port; the gRPC port defaults to a free one.
    """

    def __init__(
        self,
        model_repository: Path,
        work_dir: Path,
        *,
        host: str = "127.0.0.1",
        grpc_port: int | None = None,
        http_port: int | None = None,
        metrics_port: int | None = None,
        startup_timeout_s: float = 120.0,
        extra_args: Sequence[str] = (),
        python_prefix: Path | None = None,
    ) -> None:
        self.model_repository = model_repository
        self.work_dir = work_dir
        self.host = host
        self.grpc_port = grpc_port or free_port(host)
        self.http_port = http_port
        self.metrics_port = metrics_port
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = tuple(extra_args)
        #: The virtual environment python models run in (default: this process's).
        self.python_prefix = python_prefix
        self.log_path = work_dir / "tritonserver.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def _command(self, binary: Path, backends: Path) -> list[str]:
        args = [
            str(binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            # Several servers may share a machine; each gets its own python backend shm regions.
            f"--backend-config=python,shm-region-prefix-name=rosemesh_{uuid.uuid4().hex[:12]}_",
            "--exit-timeout-secs=5",
        ]
        if self.http_port is None:
            args.append("--allow-http=false")
        else:
            args += [f"--http-address={self.host}", f"--http-port={self.http_port}"]
        if self.metrics_port is None:
            args.append("--allow-metrics=false")
        else:
            args += [f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}"]
        return args + list(self.extra_args)

    def start(self) -> None:
        """Launch the server and block until it reports ready; raise TritonError if it does not."""
        if self._process is not None:
            raise TritonError("tritonserver is already running")
        dist = find_distribution()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        backends = stage_backends(self.work_dir, dist)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self._command(dist.binary, backends),
                env=triton_env(dist, python_prefix=self.python_prefix),
                cwd=self.work_dir,  # not the caller's folder, which python models would see on sys.path
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C aimed at the caller must not kill it before stop() runs.
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        with grpcclient.InferenceServerClient(self.grpc_url) as client:
            while True:
                code = self._process.poll()
                if code is not None:
                    raise TritonError(
                        f"tritonserver exited with code {code} while starting:\n{self.log_excerpt()}"
                    )
                try:
                    if client.is_server_ready(client_timeout=1.0):
                        return
                except InferenceServerException:
                    pass  # not listening yet, or models still loading
                if time.monotonic() > deadline:
                    raise TritonError(
                        f"tritonserver not ready after {self.startup_timeout_s:.0f} s:\n{self.log_excerpt()}"
                    )
                time.sleep(0.1)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_excerpt(self, tail: int = 10) -> str:
        """Triton's error lines, then the log's last lines: its status tables bury the cause."""
        if not self.log_path.exists():
            return "(no log)"
        lines = self.log_path.read_text(errors="replace").splitlines()
        errors = [line for line in lines[:-tail] if _ERROR_LINE.match(line)]
        return "\n".join([*errors, *lines[-tail:], f"(full log: {self.log_path})"])

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


_PYTHON_BACKEND = re.compile(r'^\s*backend:\s*"python"', re.MULTILINE)


def render_model_repository(
    repository: Path,
    template_dir: Path,
    model_name: str,
    files: Mapping[str, Path],
    profile: Profile = "local",
    *,
    version: int = 1,
    variables: Mapping[str, str] | None = None,
) -> Path:
    """Write one model into ``repository`` from ``template_dir``; return the model's directory.

    ``config.<profile>.pbtxt`` becomes ``config.pbtxt`` after ``string.Template`` substitution
    of ``${model_name}`` and ``variables``. ``files`` maps names inside the version directory to
    artefacts (the ``.onnx`` graphs), hard-linked when possible. When the config selects the
    python backend, the template's ``*.py`` files go into the version directory too, and a
    template without a ``model.py`` gets the shared ONNX Runtime wrapper as its model.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    template = template_dir / f"config.{profile}.pbtxt"
    config = string.Template(template.read_text()).substitute({"model_name": model_name, **(variables or {})})
    model_dir = repository / model_name
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(config)
    if _PYTHON_BACKEND.search(config):
        sources = sorted(template_dir.glob("*.py"))
        for source in sources:
            shutil.copy2(source, version_dir / source.name)
        if not any(source.name == "model.py" for source in sources):
            shutil.copy2(ONNX_WRAPPER, version_dir / "model.py")
    for name, source in files.items():
        _link_or_copy(source, version_dir / name)
    return model_dir


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link keeps the repository self-contained without copying large graphs."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
