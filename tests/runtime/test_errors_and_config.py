"""The error map and settings validation."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.common.errors import BackendUnavailable, InvalidInput, Overloaded, Validator
from services.embedding.server import EmbeddingSettings
from services.runtime.config import ConfigError, load_settings
from services.runtime.interceptors import to_status


def test_invalid_input_becomes_invalid_argument_with_field_violations() -> None:
    v = Validator()
    v.check(False, "texts", "must contain at least one text")
    v.check(True, "model", "never reported")
    v.check(False, "texts[2]", "must not be empty")
    with pytest.raises(InvalidInput) as caught:
        v.raise_if_any()
    status = to_status(caught.value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "texts: must contain at least one text" in status.details
    rich = rpc_status.from_call(_FakeCall(status))
    bad_request = error_details_pb2.BadRequest()
    assert rich.details[0].Unpack(bad_request)
    assert [(f.field, f.description) for f in bad_request.field_violations] == [
        ("texts", "must contain at least one text"),
        ("texts[2]", "must not be empty"),
    ]


@pytest.mark.parametrize(
    ("error", "code"),
    [(Overloaded("full"), grpc.StatusCode.RESOURCE_EXHAUSTED), (BackendUnavailable("down"), grpc.StatusCode.UNAVAILABLE)],
)
def test_other_errors_map_to_their_codes(error: Exception, code: grpc.StatusCode) -> None:
    status = to_status(error)  # type: ignore[arg-type]
    assert status.code == code and status.details == str(error)


def test_settings_read_flags_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROSEMESH_EMBEDDING_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("ROSEMESH_EMBEDDING_PORT", "6000")
    settings = load_settings(EmbeddingSettings, ["--port", "7000"])
    assert (settings.port, settings.max_batch_size) == (7000, 8)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--port", "70000"], "--port / ROSEMESH_EMBEDDING_PORT"),
        (["--backend", "tensorflow"], "--backend / ROSEMESH_EMBEDDING_BACKEND"),
        (["--max-batch-size", "0"], "--max-batch-size / ROSEMESH_EMBEDDING_MAX_BATCH_SIZE"),
        (["--port", "7000", "--metrics-port", "7000"], "port and metrics_port must differ"),
    ],
)
def test_bad_settings_stop_with_a_message_naming_them(flags: list[str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(EmbeddingSettings, flags)
    assert named in str(caught.value)


class _FakeCall:
    """Just enough of grpc.Call for grpc_status.rpc_status.from_call."""

    def __init__(self, status: grpc.Status) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._status.trailing_metadata


@pytest.mark.parametrize(
    "flags",
    [
        # a model-level check fails: its input is every setting, the key among them
        ["--storage", "qdrant", "--qdrant-api-key", "s3cr3t-qdrant-key"],
        # the secret field itself is malformed
        ["--storage", "qdrant", "--qdrant-url", "http://q:6333", "--qdrant-api-key", "s3cr3t-qdrant-key", "--max-k", "0"],
    ],
)
def test_a_settings_error_never_prints_a_secret(flags: list[str]) -> None:
    from services.experience.server import ExperienceSettings

    with pytest.raises(ConfigError) as error:
        load_settings(ExperienceSettings, flags)
    message = str(error.value)
    assert "invalid configuration for ExperienceSettings" in message
    assert "s3cr3t-qdrant-key" not in message


def test_a_settings_error_still_names_a_plain_bad_value() -> None:
    from services.experience.server import ExperienceSettings

    with pytest.raises(ConfigError, match=r"--max-k.*got '0'|--max-k.*got 0"):
        load_settings(ExperienceSettings, ["--max-k", "0"])



async def test_the_embedding_gateway_maps_the_embedding_services_answers(embedding_service: object) -> None:
    """A text the embedding service refuses is the caller's INVALID_ARGUMENT, not an outage; an
    unreachable one is UNAVAILABLE."""
    from services.adapters.embedding_service import RemoteEmbedder
    from services.common.net import free_port
    from tests.conftest import TEST_MAX_TEXTS

    gateway = RemoteEmbedder(embedding_service.address, 30.0)  # type: ignore[attr-defined]
    try:
        assert (await gateway.embed(["fine"])).shape == (1, 384)
        with pytest.raises(InvalidInput) as refused:
            await gateway.embed(["x"] * (TEST_MAX_TEXTS + 1))
        assert refused.value.violations[0].field == "text" and "exceed the limit" in refused.value.message
        assert to_status(refused.value).code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await gateway.close()
    nowhere = RemoteEmbedder(f"127.0.0.1:{free_port()}", 2.0)
    try:
        with pytest.raises(BackendUnavailable):
            await nowhere.embed(["fine"])
    finally:
        await nowhere.close()
