"""The embedded default judge: a GGUF model on llama.cpp's OpenAI-compatible server, run as a
child process and watched. A crash of the child (a native fault, the OOM killer, a kill) fails
the calls in flight with UNAVAILABLE and the reason, and the watcher starts a new child by
itself, backing off while it keeps dying. Decoding is constrained to the rubric's JSON schema
(the server compiles it to a grammar)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from services.adapters.chat import ChatEndpoint
from services.adapters.local_llm import LocalLLMServer
from services.common.errors import BackendUnavailable
from services.critique.core.prompts import ChatMessage

log = logging.getLogger(__name__)

T = TypeVar("T")

_WATCH_S = 0.5
_BACKOFF_S = (1.0, 2.0, 5.0, 15.0, 30.0)


class LocalJudge:
    constrained = True

    def __init__(
        self,
        model_path: Path,
        name: str,
        *,
        context: int = 4096,
        threads: int | None = None,
        timeout_s: float = 120.0,
        temperature: float = 0.0,
    ) -> None:
        self.model = name
        self.temperature = temperature
        self.timeout_s = timeout_s
        self.server = LocalLLMServer(model_path, alias=name, context=context, threads=threads)
        self._endpoint: ChatEndpoint | None = None
        self._down: str | None = "is starting"
        self._watcher: asyncio.Task[None] | None = None
        # llama.cpp's server runs one completion at a time: calls wait here, so that a call's
        # timeout counts its own run, not the queue ahead of it.
        self._turn = asyncio.Lock()
        self.restarts = 0

    async def start(self) -> None:
        """Start the child and its watcher; raises when the first start fails."""
        await self._spawn()
        self._watcher = asyncio.create_task(self._watch(), name=f"watch judge {self.model}")

    async def _spawn(self) -> None:
        await asyncio.to_thread(self.server.start)
        old, self._endpoint = self._endpoint, ChatEndpoint(
            self.server.base_url, self.model, timeout_s=self.timeout_s, max_retries=0
        )
        if old is not None:
            await old.close()
        self._down = None

    async def _watch(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(_WATCH_S)
            reason = self.server.exit_reason()
            if reason is None:
                continue
            self._down = f"{reason}; restarting it"
            log.error("local judge died", extra={"judge": self.model, "reason": reason, "log": self.server.log_tail()})
            await asyncio.sleep(_BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)])
            try:
                await self._spawn()
            except (RuntimeError, TimeoutError) as exc:
                failures += 1
                self._down = f"could not be restarted ({exc}); retrying"
                continue
            failures = 0
            self.restarts += 1
            log.warning("local judge restarted", extra={"judge": self.model, "restarts": self.restarts})

    async def complete(self, messages: list[ChatMessage], schema: dict[str, Any], max_tokens: int) -> str:
        async with self._turn:
            return await self._call(
                lambda endpoint: endpoint.complete(
                    messages, max_tokens=max_tokens, temperature=self.temperature, schema=schema, schema_mode="json_object"
                )
            )

    async def choose(self, messages: list[ChatMessage], options: Sequence[str]) -> dict[str, float]:
        async with self._turn:
            return await self._call(lambda endpoint: endpoint.first_token_probabilities(messages, options))

    async def _call(self, ask: Callable[[ChatEndpoint], Awaitable[T]]) -> T:
        endpoint = self._endpoint
        if self._down is not None or endpoint is None:
            raise BackendUnavailable(f"local judge {self.model} {self._down}")
        try:
            return await ask(endpoint)
        except BackendUnavailable as exc:
            # A dropped connection is the child's death more often than not: say so.
            if (reason := await asyncio.to_thread(self.server.exit_reason, 2.0)) is not None:
                self._down = f"{reason}; restarting it"
                raise BackendUnavailable(f"local judge {self.model} {reason} during the call; restarting it") from exc
            raise

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        if self._endpoint is not None:
            await self._endpoint.close()
        await asyncio.to_thread(self.server.stop)
