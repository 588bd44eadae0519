"""One embedding peer, run inside the peers' virtual environment by `rosemesh bench embedding`.

Standalone on purpose: the peers need versions the project cannot pin beside its own
(transformers 4, numpy 2), so this file imports nothing from rosemesh. Protocol on stdio:
it prints "ready" once loaded; for each "round" line it embeds every text and prints
{"seconds": ...}; the first round also saves the vectors to --vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json", "vocab.txt")


def onnx_export(source: Path, cache: Path) -> Path:
    """sentence-transformers' own ONNX export of the model (optimum), made once."""
    target = cache / "st-onnx"
    if not (target / "onnx" / "model.onnx").exists():
        from sentence_transformers import SentenceTransformer

        SentenceTransformer(str(source), backend="onnx", device="cpu").save(str(target))
    return target


def load(peer: str, source: Path, cache: Path, threads: int, batch_size: int):  # noqa: ANN201 - a closure
    if peer == "st-onnx":
        import onnxruntime as ort
        from sentence_transformers import SentenceTransformer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        model = SentenceTransformer(
            str(onnx_export(source, cache)),
            backend="onnx",
            device="cpu",
            model_kwargs={"provider": "CPUExecutionProvider", "session_options": options},
        )
        return lambda texts: model.encode(texts, batch_size=batch_size, convert_to_numpy=True)
    if peer == "st-openvino":
        from sentence_transformers import SentenceTransformer

        # fp32 on purpose: OpenVINO turns bf16 on by itself where the CPU has AMX.
        config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
        model = SentenceTransformer(str(source), backend="openvino", device="cpu", model_kwargs={"ov_config": config})
        return lambda texts: model.encode(texts, batch_size=batch_size, convert_to_numpy=True)
    if peer == "fastembed":
        from fastembed import TextEmbedding

        folder = onnx_export(source, cache) / "onnx"
        for name in TOKENIZER_FILES:
            if (source / name).exists() and not (folder / name).exists():
                shutil.copyfile(source / name, folder / name)
        model = TextEmbedding(
            model_name="sentence-transformers/all-MiniLM-L6-v2",
            specific_model_path=str(folder),
            threads=threads,
            local_files_only=True,
        )
        return lambda texts: np.array(list(model.embed(texts, batch_size=batch_size)))
    raise SystemExit(f"unknown peer {peer!r}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--texts", type=Path, required=True)
    parser.add_argument("--vectors", type=Path, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    args.cache.mkdir(parents=True, exist_ok=True)
    texts = json.loads(args.texts.read_text())
    embed = load(args.peer, args.model_dir, args.cache, args.threads, args.batch_size)
    embed(texts[: args.batch_size])  # warm-up
    print("ready", flush=True)
    first = True
    for line in sys.stdin:
        if line.strip() != "round":
            continue
        began = time.perf_counter()
        vectors = embed(texts)
        seconds = time.perf_counter() - began
        if first:
            np.save(args.vectors, np.asarray(vectors, dtype=np.float32))
            first = False
        print(json.dumps({"seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
