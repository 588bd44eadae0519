"""Triton BLS orchestrator for a multi-exit model: runs segment after segment inside Triton.

Segments are the models ``<this model>_segment_<n>``. Each step sends only the rows still
running, trimmed to their longest sequence, and a row leaves as soon as its exit rule fires.
The rule and the loop are ``exit_cascade.py`` beside this file: rendering the repository copies
it from ``kernels/exit_cascade.py``, the code the in-process backend runs, so both backends
decide identically. Nothing here imports rosemesh, so a stock Triton image (numpy and the
python backend) serves it.
"""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils
from exit_cascade import WirePolicy, run_cascade


class SegmentFailed(RuntimeError):
    pass


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.name = args["model_name"]
        self.depth = int(config["parameters"]["depth"]["string_value"])

    def _run_segment(
        self, index: int, inputs: np.ndarray, attention_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        first = "input_ids" if index == 0 else "hidden_in"
        request = pb_utils.InferenceRequest(
            model_name=f"{self.name}_segment_{index + 1}",
            requested_output_names=["hidden_out", "logits"],
            inputs=[pb_utils.Tensor(first, inputs), pb_utils.Tensor("attention_mask", attention_mask)],
        )
        response = request.exec()
        if response.has_error():
            raise SegmentFailed(f"segment {index + 1}: {response.error().message()}")
        hidden = pb_utils.get_output_tensor_by_name(response, "hidden_out").as_numpy()
        logits = pb_utils.get_output_tensor_by_name(response, "logits").as_numpy()
        return hidden, logits

    def execute(self, requests: list[pb_utils.InferenceRequest]) -> list[pb_utils.InferenceResponse]:
        return [self._classify(request) for request in requests]

    def _classify(self, request: pb_utils.InferenceRequest) -> pb_utils.InferenceResponse:
        def scalar(name: str) -> float:
            return pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)[0].item()

        try:
            input_ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy()
            attention_mask = pb_utils.get_input_tensor_by_name(request, "attention_mask").as_numpy()
            policy = WirePolicy(
                int(scalar("exit_mode")),
                int(scalar("static_layer")),
                float(scalar("entropy_threshold")),
                int(scalar("patience")),
            )
            result = run_cascade(self._run_segment, input_ids, attention_mask, policy, self.depth)
        except Exception as exc:  # noqa: BLE001 - reported to the caller as a Triton error
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("logits", np.ascontiguousarray(result.logits, dtype=np.float32)),
                pb_utils.Tensor("exit_layer", result.exit_layers.astype(np.int64)),
            ]
        )
