"""A judge behind any OpenAI-compatible chat endpoint (vLLM serving CritiqueLLM, say)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.adapters.chat import ChatEndpoint, SchemaMode
from services.critique.core.prompts import ChatMessage


class EndpointJudge:
    def __init__(
        self, endpoint: ChatEndpoint, schema_mode: SchemaMode = "json_schema", temperature: float = 0.0
    ):
        self.endpoint = endpoint
        self.model = endpoint.model
        self.schema_mode = schema_mode
        self.temperature = temperature
        # With a schema mode the endpoint is asked to constrain decoding; whether it does is
        # the endpoint's business, so parsing and repair still run on every answer.
        self.constrained = schema_mode != "none"

    async def complete(self, messages: list[ChatMessage], schema: dict[str, Any], max_tokens: int) -> str:
        return await self.endpoint.complete(
            messages,
            max_tokens=max_tokens,
            temperature=self.temperature,
            schema=schema,
            schema_mode=self.schema_mode,
        )

    async def choose(self, messages: list[ChatMessage], options: Sequence[str]) -> dict[str, float]:
        return await self.endpoint.first_token_probabilities(messages, options)

    async def close(self) -> None:
        await self.endpoint.close()
