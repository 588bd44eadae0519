"""What the CPU offers, and the fast tier's runtime that follows from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Flags that change which kernels pay off; the rest of /proc/cpuinfo does not matter here.
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The relevant ISA flags of this machine's first CPU (empty where /proc is absent)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [flag for flag in RELEVANT_FLAGS if flag in flags]


@dataclass(frozen=True)
class FastPath:
    precision: str  # "bf16" or "int8"; both run on OpenVINO
    cpu_path: str  # what ListModels and the logs say, e.g. "AMX bf16"


def fast_path(features: list[str], *, plain: bool) -> FastPath:
    """bf16 where the CPU computes bf16 natively (AMX, AVX-512 BF16): near fp32 parity at the
    fast tier's speed. Elsewhere, or when plain paths are forced, the static int8 graph whose
    layers the export chose on dev sentences."""
    if not plain and "amx_bf16" in features:
        return FastPath("bf16", "AMX bf16")
    if not plain and "avx512_bf16" in features:
        return FastPath("bf16", "AVX-512 BF16")
    if not plain and ("avx512_vnni" in features or "avx_vnni" in features):
        return FastPath("int8", "VNNI int8")
    return FastPath("int8", "int8 (no VNNI or AMX chosen)")


def exact_path(features: list[str]) -> str:
    """fp32 needs neither VNNI nor AMX; say which vector width it runs at."""
    return "AVX-512 fp32" if "avx512f" in features else ("AVX2 fp32" if "avx2" in features else "fp32")
