"""The Triton model repository stands on its own: the cascade imports nothing of rosemesh, every
config parses with Triton's own model-config protobuf, and the templates ship in the package."""

from __future__ import annotations

import ast
import shutil
import string
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from kernels import exit_cascade
from services.adapters.tritonserver import PROFILES, TEMPLATES_DIR
from tests.helpers import isolated_environment

CASCADE = TEMPLATES_DIR / "earlyexit" / "cascade"
#: What a stock Triton image's python backend offers a model: the standard library, numpy, its
#: own utilities, and the files rendered beside the model.
ALLOWED = {"__future__", "json", "dataclasses", "collections", "numpy", "triton_python_backend_utils", "exit_cascade"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", [*sorted(CASCADE.glob("*.py")), Path(exit_cascade.__file__)], ids=lambda p: p.name)
def test_the_cascade_imports_nothing_of_rosemesh(path: Path) -> None:
    roots = imported_roots(path)
    assert not roots & {"services", "kernels", "rosemesh", "torch", "numba", "triton"}, roots
    assert roots <= ALLOWED, roots - ALLOWED


def test_the_cascade_module_runs_where_only_numpy_is(tmp_path: Path) -> None:
    """The copied module on its own, in an interpreter that cannot import rosemesh."""
    environment = isolated_environment(tmp_path / "env")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "exit_cascade.py").write_text(Path(exit_cascade.__file__).read_text())
    script = (
        "import numpy as np, exit_cascade as c\n"
        "try:\n    import services\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('services importable')\n"
        "segment = lambda i, x, m: (np.zeros((len(x), x.shape[1], 4), np.float32), np.tile([[4.0, 0.0]], (len(x), 1)).astype(np.float32))\n"
        "r = c.run_cascade(segment, np.ones((3, 5), np.int64), np.ones((3, 5), np.int64), c.WirePolicy(c.MODE_DYNAMIC, entropy_threshold=0.5), 6)\n"
        "print(r.exit_layers.tolist())\n"
    )
    done = subprocess.run([str(environment / "bin" / "python"), "-c", script], cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 1, 1]"  # confident at layer 1: every row leaves there


VARIABLES = {
    "model_name": "m",
    "num_labels": "2",
    "hidden": "384",
    "depth": "6",
    "onnx_file": "model.onnx",
    "input_name": "input_ids",
    "input_type": "TYPE_INT64",
    "input_dims": "[ -1 ]",
}


@pytest.mark.parametrize(
    "template",
    sorted(TEMPLATES_DIR.glob("*/**/config.*.pbtxt")),
    ids=lambda p: f"{p.parent.relative_to(TEMPLATES_DIR)}-{p.name}",
)
def test_every_config_parses_as_a_triton_model_config(template: Path) -> None:
    assert template.name in {f"config.{profile}.pbtxt" for profile in PROFILES}
    config = string.Template(template.read_text()).substitute(VARIABLES)
    parsed = text_format.Parse(config, model_config_pb2.ModelConfig())
    assert parsed.name == "m" and (parsed.backend or parsed.platform)
    assert parsed.input and parsed.output


def test_the_templates_ship_inside_the_wheel(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(root)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("rosemesh-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"deploy/triton/{p.relative_to(TEMPLATES_DIR)}" for p in TEMPLATES_DIR.rglob("*") if p.is_file() and p.suffix in (".py", ".pbtxt")}
    assert expected and expected <= names, sorted(expected - names)
    assert "kernels/exit_cascade.py" in names


def test_rosemesh_triton_render_writes_the_mesh_repository(
    earlyexit_models_dir: Path, embedding_model: object, tmp_path: Path
) -> None:
    """The command the chart's init container runs: embedding and every early-exit model from one
    model cache, each config a valid Triton model config, the cascade beside its module."""
    from services.embedding.bundle import exported_model

    cache = tmp_path / "cache"
    shutil.copytree(earlyexit_models_dir, cache)
    exported = exported_model(cache)
    exported.fp32_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(embedding_model.fp32_path, exported.fp32_path)  # type: ignore[attr-defined]
    out = tmp_path / "repository"
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "triton", "render", "--out", str(out), "--models-dir", str(cache)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    names = done.stdout.split()
    assert "embedding_minilm" in names and "rotten_tomatoes" in names
    assert "rotten_tomatoes_segment_6" in names and "rotten_tomatoes-hashee-frequency" in names
    for name in names:
        config = text_format.Parse((out / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert config.name == name
    assert (out / "rotten_tomatoes" / "1" / "exit_cascade.py").read_text() == Path(exit_cascade.__file__).read_text()


def test_rosemesh_triton_render_says_what_is_missing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "triton", "render", "--out", str(tmp_path / "r"),
         "--models-dir", str(tmp_path / "empty")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 1
    assert "cannot render the Triton repository" in done.stderr and "no early-exit model in" in done.stderr
