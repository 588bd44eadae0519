"""Exit policies between protobuf and the core, for the servicer and the typed client alike."""

from __future__ import annotations

from rosemesh.earlyexit.v1 import earlyexit_pb2

from services.common.errors import InvalidInput
from services.earlyexit.core.policy import MODE_CODES, ExitPolicy

_MODES_BY_CODE = {code: mode for mode, code in MODE_CODES.items()}


def policy_from_proto(message: earlyexit_pb2.ExitPolicy) -> ExitPolicy | None:
    """None when the request leaves the policy to the model."""
    if message.mode == earlyexit_pb2.EXIT_MODE_UNSPECIFIED:
        return None
    if message.mode not in _MODES_BY_CODE:
        known = ", ".join(earlyexit_pb2.ExitMode.Name(code) for code in _MODES_BY_CODE)
        raise InvalidInput.single("policy.mode", f"unknown exit mode {message.mode}; expected one of {known}")
    return ExitPolicy(
        _MODES_BY_CODE[message.mode],
        static_layer=message.static_layer if message.mode == earlyexit_pb2.EXIT_MODE_STATIC else None,
        entropy_threshold=message.entropy_threshold if message.HasField("entropy_threshold") else None,
        patience=message.patience if message.HasField("patience") else None,
    )


def policy_to_proto(policy: ExitPolicy) -> earlyexit_pb2.ExitPolicy:
    message = earlyexit_pb2.ExitPolicy(mode=MODE_CODES[policy.mode], static_layer=policy.static_layer or 0)
    if policy.entropy_threshold is not None:
        message.entropy_threshold = policy.entropy_threshold
    if policy.patience is not None:
        message.patience = policy.patience
    return message
