"""Generate the Python stubs in gen/python from protos/, or check that they are current.

    python tools/gen_protos.py          # regenerate
    python tools/gen_protos.py --check  # exit 1 when the committed stubs are stale
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "gen" / "python"


def generate(out: Path) -> None:
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Regular packages, so that editable installs and type checkers find them.
    for directory in [out / "rosemesh", *(p for p in (out / "rosemesh").rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()


def stale_files(expected: Path, actual: Path) -> list[str]:
    def listing(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}

    want, have = listing(expected), listing(actual)
    changed = [f for f in want & have if not filecmp.cmp(expected / f, actual / f, shallow=False)]
    return sorted((want ^ have) | set(changed))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail when gen/python differs from protos/")
    check = parser.parse_args().check
    if not check:
        shutil.rmtree(OUT, ignore_errors=True)
        OUT.mkdir(parents=True)
        generate(OUT)
        print(f"generated stubs in {OUT.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        stale = stale_files(fresh, OUT)
    if stale:
        print("stale generated stubs; run `make protos` and commit:", *stale, sep="\n  ", file=sys.stderr)
        return 1
    print("generated stubs are current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
