"""Service configuration from flags and environment, validated at start.

Every service subclasses ``ServiceSettings``; values come from (highest first) command-line
flags, ``ROSEMESH_<SERVICE>_*`` variables, then defaults. A bad value stops the process
with a message naming the setting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, FilePath, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.runtime.security import ClientTls, TokenTable


def default_models_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "rosemesh" / "models"


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="forbid", cli_kebab_case=True, cli_implicit_flags=True)

    host: str = Field("127.0.0.1", description="address the gRPC and metrics servers bind to")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port (0 picks a free one)")
    metrics_port: int = Field(9464, ge=0, le=65535, description="Prometheus /metrics port (0 picks a free one)")
    grace_period_s: float = Field(10.0, gt=0, le=300, description="time in-flight RPCs get to finish on SIGTERM")
    max_message_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024, description="largest gRPC message accepted or sent"
    )
    max_concurrent_rpcs: int = Field(
        256, ge=1, description="RPCs served at once; beyond this, calls get RESOURCE_EXHAUSTED"
    )
    keepalive_time_s: float = Field(30.0, gt=0, description="interval of server keepalive pings")
    keepalive_timeout_s: float = Field(10.0, gt=0, description="time to wait for a keepalive ack")
    max_connection_age_s: float = Field(
        300.0, gt=0, description="connections close after this (with a grace): clients re-resolve and reach new pods"
    )
    max_connection_age_grace_s: float = Field(30.0, ge=0, description="time in-flight calls get to finish then")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    models_dir: Path = Field(default_factory=default_models_dir, description="where model artefacts are cached")
    # Security: everything off by default.
    auth_tokens_file: FilePath | None = Field(
        None, description="file of 'TENANT SHA256-OF-TOKEN' lines; when set, every call needs a Bearer token"
    )
    outbound_token: SecretStr = Field(
        SecretStr(""), description="token for calls this service makes on its own behalf (start-up checks)"
    )
    tls_cert_file: FilePath | None = Field(None, description="PEM certificate: serve TLS, and the client cert for mTLS")
    tls_key_file: FilePath | None = Field(None, description="PEM private key of --tls-cert-file")
    tls_ca_file: FilePath | None = Field(
        None, description="PEM CA that verifies the services this one calls (and clients, with mTLS)"
    )
    tls_require_client_cert: bool = Field(False, description="mutual TLS: refuse clients without a CA-signed cert")

    @model_validator(mode="after")
    def _distinct_ports(self) -> ServiceSettings:
        if self.port and self.port == self.metrics_port:
            raise ValueError(f"port and metrics_port must differ (both are {self.port})")
        return self

    @model_validator(mode="after")
    def _tls_complete(self) -> ServiceSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("--tls-cert-file and --tls-key-file go together")
        if self.tls_require_client_cert and (self.tls_cert_file is None or self.tls_ca_file is None):
            raise ValueError("--tls-require-client-cert needs --tls-cert-file, --tls-key-file and --tls-ca-file")
        return self

    @model_validator(mode="after")
    def _tokens_readable(self) -> ServiceSettings:
        if self.auth_tokens_file is not None:
            self.token_table()
        return self

    def token_table(self) -> TokenTable | None:
        return TokenTable.from_file(self.auth_tokens_file) if self.auth_tokens_file else None

    def client_tls(self) -> ClientTls | None:
        """TLS for calls to the other services: on when a CA is given; with a cert, mutual."""
        if self.tls_ca_file is None:
            return None
        return ClientTls(self.tls_ca_file, self.tls_cert_file, self.tls_key_file)

    def client_security(self) -> dict[str, object]:
        """Options for the ServiceClients this service uses to call the others."""
        return {"tls": self.client_tls(), "token": self.outbound_token.get_secret_value() or None}


class ConfigError(SystemExit):
    """Raised with a readable message when settings do not validate."""


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def load_settings(cls: type[SettingsT], args: list[str] | None = None, prog: str = "rosemesh serve") -> SettingsT:
    """Build settings from flags (``args``), environment and defaults, or exit with a clear message."""
    try:
        return cls(_cli_parse_args=args or [], _cli_prog_name=prog)  # type: ignore[call-arg]
    except ValidationError as exc:
        env_prefix = cls.model_config.get("env_prefix", "")
        lines = [f"invalid configuration for {cls.__name__}:"]
        for error in exc.errors():
            name = ".".join(str(p) for p in error["loc"]) or "settings"
            where = f"--{name.replace('_', '-')} / {env_prefix}{name.upper()}" if error["loc"] else name
            lines.append(f"  {where}: {error['msg']}{_shown_input(cls, error)}")
        raise ConfigError("\n".join(lines)) from None


_SECRET_WORDS = ("key", "token", "secret", "password", "credential")


def _shown_input(cls: type[BaseSettings], error: Any) -> str:
    """What the message may repeat of the offending input: nothing for a model-level check (its
    input is every setting, secrets included) or for a secret field, else the value."""
    loc = error["loc"]
    if not loc or "input" not in error:
        return ""
    field = cls.model_fields.get(str(loc[0]))
    secret = field is not None and "SecretStr" in str(field.annotation)
    if secret or any(word in str(loc[0]).lower() for word in _SECRET_WORDS):
        return " (value not shown: it may be a secret)"
    return f" (got {error['input']!r})"
