"""Token table, call context (deadline caps, credential pass-through), TLS settings, circuit breaker."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from services.common.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitOpen
from services.common.errors import BackendUnavailable, DeadlineExceeded, InvalidInput
from services.embedding.server import EmbeddingSettings
from services.runtime.config import ConfigError, load_settings
from services.runtime.security import _CALL, CallContext, TokenTable, hash_token, new_token, outbound


def test_token_table_maps_tokens_to_tenants_by_hash_only(tmp_path: Path) -> None:
    a, b = new_token(), new_token()
    path = tmp_path / "tokens"
    path.write_text(f"# tenants\nacme {hash_token(a)}\n\nglobex {hash_token(b)}  # second\n")
    assert a not in path.read_text()
    table = TokenTable.from_file(path)
    assert (table.tenant_for(a), table.tenant_for(b), table.tenant_for("guess")) == ("acme", "globex", None)


@pytest.mark.parametrize(
    "text", ["", "acme\n", "Acme " + "0" * 64, "acme nothex", f"a {'0' * 64}\nb {'0' * 64}\n"]
)
def test_a_bad_token_file_is_refused_at_start(tmp_path: Path, text: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(ConfigError, match="auth-tokens-file|tokens"):
        load_settings(EmbeddingSettings, ["--auth-tokens-file", str(path)])


def test_tls_settings_must_be_complete(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("x")
    with pytest.raises(ConfigError, match="go together"):
        load_settings(EmbeddingSettings, ["--tls-cert-file", str(pem)])
    with pytest.raises(ConfigError, match="needs"):
        load_settings(EmbeddingSettings, ["--tls-cert-file", str(pem), "--tls-key-file", str(pem), "--tls-require-client-cert"])
    settings = load_settings(EmbeddingSettings, ["--tls-ca-file", str(pem), "--outbound-token", "secret"])
    assert settings.client_tls() is not None and "secret" not in repr(settings)


def test_outbound_calls_carry_the_callers_deadline_and_credentials() -> None:
    assert outbound(10.0, None) == (10.0, ())
    assert outbound(10.0, "own") == (10.0, (("authorization", "Bearer own"),))
    reset = _CALL.set(CallContext("acme", "Bearer callers", time.monotonic() + 0.5))
    try:
        timeout, metadata = outbound(10.0, "own")
        assert 0 < timeout <= 0.5 and metadata == (("authorization", "Bearer callers"),)
        _CALL.set(CallContext("acme", None, time.monotonic() - 0.01))
        with pytest.raises(DeadlineExceeded):
            outbound(10.0, None)
    finally:
        _CALL.reset(reset)


def test_circuit_opens_fails_fast_then_recovers_through_one_trial() -> None:
    now = [0.0]
    breaker = CircuitBreaker("backend-x", failure_threshold=3, reset_timeout_s=2.0, clock=lambda: now[0])

    def fail() -> None:
        with breaker.guard():
            raise BackendUnavailable("down")

    for _ in range(3):
        with pytest.raises(BackendUnavailable):
            fail()
    assert breaker.state == OPEN
    with pytest.raises(CircuitOpen, match="next trial"):
        breaker.admit()
    now[0] = 2.5
    breaker.admit()  # the trial
    assert breaker.state == HALF_OPEN
    with pytest.raises(CircuitOpen, match="trial call is running"):
        breaker.admit()
    breaker.failed()
    assert breaker.state == OPEN
    now[0] = 5.0
    with breaker.guard():
        pass
    assert breaker.state == CLOSED and breaker.failures == 0


def test_a_refused_request_proves_the_backend_alive() -> None:
    breaker = CircuitBreaker("backend-y", failure_threshold=1)
    with pytest.raises(InvalidInput), breaker.guard():
        raise InvalidInput.single("x", "bad")
    assert breaker.state == CLOSED
