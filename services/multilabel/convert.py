"""Policies between protobuf and the core, for the servicer and the typed client alike."""

from __future__ import annotations

from rosemesh.multilabel.v1 import multilabel_pb2

from services.multilabel.core.bundle import Policy

POLICY_CODES = {
    Policy.FIXED: multilabel_pb2.POLICY_FIXED,
    Policy.TUNED: multilabel_pb2.POLICY_TUNED,
    Policy.META: multilabel_pb2.POLICY_META,
}
POLICIES_BY_CODE = {code: policy for policy, code in POLICY_CODES.items()}
