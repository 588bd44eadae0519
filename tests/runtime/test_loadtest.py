"""A short `rosemesh bench load`: every fault scenario against the real mesh on 127.0.0.1."""

from __future__ import annotations

import pytest

from services.embedding.bundle import ExportedModel
from services.offline.loadtest import LoadConfig, run_load


@pytest.mark.slow
def test_no_acknowledged_write_is_lost_and_every_scenario_recovers(embedding_model: ExportedModel) -> None:
    config = LoadConfig(concurrency=(4,), before_s=1.5, fault_s=2.0, after_s=1.0)
    result = run_load(config)
    reports = {r["scenario"]: r for r in result["scenarios"]}
    assert {"embedding_kill", "experience_kill", "slow_embedding"} <= set(reports)
    for name, report in reports.items():
        assert report["recovery_s"] is not None, f"{name} did not recover: {report}"
        assert report["succeeded"] > 0 and report["sent"] == report["succeeded"] + sum(report["failed"].values())
    for name in ("embedding_kill", "experience_kill", "slow_embedding"):
        assert reports[name]["acknowledged_writes"] > 0
        assert reports[name]["lost_acknowledged_writes"] == 0, reports[name]
    # Faults are reported as UNAVAILABLE or DEADLINE_EXCEEDED, and within the caller's deadline.
    for report in reports.values():
        assert set(report["failed"]) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}, report
    slow = reports["slow_embedding"]
    assert slow["max_failed_ms"] < config.slow_timeout_s * 1000 + 1000
    assert result["lost_acknowledged_writes"] == 0
