"""The supervisor's bundle queue: builds run one at a time, cheapest first, and a download runs
beside them, so a long fetch never holds up a service's model build."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from services import supervisor
from services.common.bundles import Bundle, BundleRequest, progress_file, read_progress


def request(folder: Path, name: str, minutes: float, downloads: bool = False) -> BundleRequest:
    bundle = Bundle(name, folder / name, lambda: (folder / name).exists(), hint="")
    return BundleRequest(bundle, [name], minutes=minutes, downloads=downloads)


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, float]]:
    """Each maker's start and end, in order; a maker takes a tenth of a second per estimated minute,
    the judge ten times its estimate (fetches are the estimates that go wrong)."""
    events: list[tuple[str, str, float]] = []
    lock = threading.Lock()

    def make(request: BundleRequest, started: object = None) -> None:
        with lock:
            events.append(("start", request.bundle.what, time.monotonic()))
        time.sleep(request.minutes / (1 if request.bundle.what == "judge" else 10))
        request.bundle.directory.mkdir()
        with lock:
            events.append(("end", request.bundle.what, time.monotonic()))

    monkeypatch.setattr(supervisor, "make_bundle", make)
    return events


def test_builds_run_one_at_a_time_cheapest_first_and_a_download_runs_beside_them(
    tmp_path: Path, made: list[tuple[str, str, float]]
) -> None:
    requests = [
        request(tmp_path, "early-exit model", 3),
        request(tmp_path, "judge", 2, downloads=True),
        request(tmp_path, "multilabel model", 1),
    ]
    makers = supervisor.BundleMakers(requests)
    assert read_progress(progress_file(tmp_path / "early-exit model")) is None
    makers.start()
    while makers.busy:
        time.sleep(0.02)
    makers.stop()
    assert makers.error is None
    starts = [what for kind, what, _ in made if kind == "start"]
    assert set(starts[:2]) == {"multilabel model", "judge"} and starts[2] == "early-exit model"
    builds = [(what, at) for kind, what, at in made if what != "judge"]
    # The builds never overlap: the multilabel one ends before the early-exit one starts.
    assert [what for what, _ in builds] == ["multilabel model"] * 2 + ["early-exit model"] * 2
    judge_end = next(at for kind, what, at in made if kind == "end" and what == "judge")
    early_exit_end = next(at for kind, what, at in made if kind == "end" and what == "early-exit model")
    assert early_exit_end < judge_end, "the early-exit build waited for the judge's download"
    assert all((tmp_path / r.bundle.what).is_dir() for r in requests)


def test_a_build_queued_behind_another_says_so(tmp_path: Path, made: list[tuple[str, str, float]]) -> None:
    requests = [request(tmp_path, "first", 4), request(tmp_path, "second", 5), request(tmp_path, "fetch", 1, True)]
    makers = supervisor.BundleMakers(requests)
    makers.start()
    time.sleep(0.1)
    assert read_progress(progress_file(tmp_path / "second")) == "queued behind first"
    assert "second: queued behind first" in makers.progress()
    makers.stop()
