"""One client for OpenAI-compatible chat endpoints (vLLM, llama.cpp's server, OpenAI itself),
shared by every service that talks to an LLM.

Endpoint failures become BackendUnavailable with what went wrong (timeout, HTTP status,
connection refused), so a service answers UNAVAILABLE with a message instead of a stack trace.
A circuit breaker per endpoint opens on repeated timeouts, connection failures, 408, 429 and 5xx
(not on other 4xx: those are the request's fault), and then fails calls at once until a trial
call succeeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import openai
from openai import AsyncOpenAI

from services.common.breaker import CircuitBreaker
from services.common.errors import BackendUnavailable

#: How a JSON schema is passed to the endpoint: OpenAI's structured outputs (vLLM supports it),
#: llama.cpp's server form ({"type": "json_object", "schema": ...}), or not at all.
SchemaMode = Literal["json_schema", "json_object", "none"]


def response_format(schema: dict[str, Any] | None, mode: SchemaMode) -> dict[str, Any] | None:
    if schema is None or mode == "none":
        return None
    if mode == "json_object":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}


def endpoint_failure(exc: BaseException) -> bool:
    """What counts against an endpoint's circuit: it is down, slow or overloaded."""
    if not isinstance(exc, BackendUnavailable):
        return False
    cause = exc.__cause__
    return not isinstance(cause, openai.APIStatusError) or cause.status_code in (408, 429) or cause.status_code >= 500


@dataclass
class ChatEndpoint:
    base_url: str
    model: str
    api_key: str = "none"
    timeout_s: float = 60.0
    #: Retries of connection errors, 408/409/429 and 5xx, with backoff (the openai client's own).
    max_retries: int = 2
    breaker: CircuitBreaker | None = field(default=None, repr=False)
    client: AsyncOpenAI = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.breaker is None:
            self.breaker = CircuitBreaker(f"llm {self.base_url}", is_failure=endpoint_failure)
        self.client = AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key, timeout=self.timeout_s, max_retries=self.max_retries
        )

    async def _create(self, messages: list[dict[str, str]], **options: Any) -> Any:
        assert self.breaker is not None
        with self.breaker.guard():
            try:
                completion = await self.client.chat.completions.create(model=self.model, messages=messages, **options)
            except openai.APITimeoutError as exc:
                raise BackendUnavailable(
                    f"LLM endpoint {self.base_url}: no answer within {self.timeout_s:g} s"
                ) from exc
            except openai.APIStatusError as exc:
                raise BackendUnavailable(
                    f"LLM endpoint {self.base_url}: HTTP {exc.status_code}: {exc.message}"[:1000]
                ) from exc
            except openai.APIConnectionError as exc:
                raise BackendUnavailable(f"LLM endpoint {self.base_url}: cannot connect ({exc})") from exc
        if not completion.choices:
            raise BackendUnavailable(f"LLM endpoint {self.base_url}: the answer has no choices")
        return completion

    async def first_token_probabilities(
        self, messages: list[dict[str, str]], options: Sequence[str], top: int = 20
    ) -> dict[str, float]:
        """How likely the answer's first token is each option (its text, spaces aside), among the
        endpoint's ``top`` most likely tokens; an option outside them gets 0."""
        completion = await self._create(
            messages, max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=top
        )
        logprobs = completion.choices[0].logprobs
        if logprobs is None or not logprobs.content:
            raise BackendUnavailable(f"LLM endpoint {self.base_url}: the answer has no logprobs")
        found = dict.fromkeys(options, 0.0)
        for candidate in logprobs.content[0].top_logprobs:
            if (token := candidate.token.strip()) in found:
                found[token] += math.exp(candidate.logprob)
        return found

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        schema: dict[str, Any] | None = None,
        schema_mode: SchemaMode = "json_schema",
    ) -> str:
        """The first choice's text; raises BackendUnavailable when the endpoint fails."""
        options: dict[str, Any] = {}
        if (fmt := response_format(schema, schema_mode)) is not None:
            options["response_format"] = fmt
        completion = await self._create(messages, max_tokens=max_tokens, temperature=temperature, **options)
        return completion.choices[0].message.content or ""

    async def close(self) -> None:
        await self.client.close()
