"""Resident memory of this process, and its peak since a point, from Linux's /proc."""

from __future__ import annotations

from pathlib import Path


def _status_bytes(field: str, pid: int | str = "self") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return None


def resident_bytes(pid: int | str = "self") -> int | None:
    """Of this process, or of process ``pid``."""
    return _status_bytes("VmRSS", pid)


def reset_peak() -> bool:
    """Start the peak (VmHWM) again from the current resident size; False where Linux does not let it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_bytes() -> int | None:
    return _status_bytes("VmHWM")
