"""The fast tier's runtime follows from the CPU's flags; plain paths override them."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.embedding.backends.cpu import cpu_features, exact_path, fast_path

SAPPHIRE_RAPIDS = ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8"]
ZEN4 = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]
CASCADE_LAKE = ["avx2", "avx512f", "avx512_vnni"]
HASWELL = ["avx2"]


@pytest.mark.parametrize(
    ("features", "precision", "cpu_path"),
    [
        (SAPPHIRE_RAPIDS, "bf16", "AMX bf16"),
        (ZEN4, "bf16", "AVX-512 BF16"),
        (CASCADE_LAKE, "int8", "VNNI int8"),
        (HASWELL, "int8", "int8 (no VNNI or AMX chosen)"),
    ],
)
def test_fast_path_by_cpu(features: list[str], precision: str, cpu_path: str) -> None:
    path = fast_path(features, plain=False)
    assert (path.precision, path.cpu_path) == (precision, cpu_path)


@pytest.mark.parametrize("features", [SAPPHIRE_RAPIDS, ZEN4, CASCADE_LAKE, HASWELL])
def test_plain_paths_take_int8_without_naming_vnni_or_amx(features: list[str]) -> None:
    path = fast_path(features, plain=True)
    assert path.precision == "int8"
    assert "VNNI int8" not in path.cpu_path and "AMX" not in path.cpu_path.replace("no VNNI or AMX", "")


def test_cpuinfo_flags_are_read_and_filtered(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f amx_bf16 amx_tile\n\nprocessor\t: 1\n")
    assert cpu_features(cpuinfo) == ["avx2", "avx512f", "amx_bf16"]
    assert cpu_features(tmp_path / "absent") == []
    assert exact_path(["avx2", "avx512f"]) == "AVX-512 fp32" and exact_path([]) == "fp32"
