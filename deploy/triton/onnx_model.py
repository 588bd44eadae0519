"""Triton python-backend model that serves an ONNX graph with ONNX Runtime on CPU.

The tritonserver shipped in nvidia-pytriton has no onnxruntime backend, so local and CI
repositories run the same ``.onnx`` file through this wrapper. It feeds every input declared
in config.pbtxt to the graph and returns every declared output, so any single-graph model can
reuse it; the graph's file name comes from the ``onnx_file`` config parameter.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        onnx_file = config["parameters"]["onnx_file"]["string_value"]
        path = Path(args["model_repository"]) / args["model_version"] / onnx_file
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [tensor["name"] for tensor in config["input"]]
        self.outputs = [
            (tensor["name"], pb_utils.triton_string_to_numpy(tensor["data_type"]))
            for tensor in config["output"]
        ]
        # Fail at load time, not on the first request, when config and graph disagree.
        graph_inputs = {tensor.name for tensor in self.session.get_inputs()}
        graph_outputs = {tensor.name for tensor in self.session.get_outputs()}
        if set(self.inputs) != graph_inputs or not {name for name, _ in self.outputs} <= graph_outputs:
            raise pb_utils.TritonModelException(
                f"config inputs {self.inputs} / outputs {[n for n, _ in self.outputs]} do not match "
                f"{path.name}: inputs {sorted(graph_inputs)}, outputs {sorted(graph_outputs)}"
            )

    def execute(self, requests: list[pb_utils.InferenceRequest]) -> list[pb_utils.InferenceResponse]:
        # Each request is already a padded batch; one failing request must not fail the others.
        return [self._run(request) for request in requests]

    def _run(self, request: pb_utils.InferenceRequest) -> pb_utils.InferenceResponse:
        try:
            feed = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
            results = self.session.run([name for name, _ in self.outputs], feed)
        except Exception as exc:  # noqa: BLE001 - reported to the caller as a Triton error
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))
        tensors = [
            pb_utils.Tensor(name, np.ascontiguousarray(result, dtype=dtype))
            for (name, dtype), result in zip(self.outputs, results, strict=True)
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)
