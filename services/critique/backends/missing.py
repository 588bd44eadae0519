"""The judge that stands in when none could be set up."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.common.errors import BackendUnavailable
from services.critique.core.prompts import ChatMessage


class MissingJudge:
    """Stands in when no judge could be set up, so the service still serves what needs none
    (ListRubrics) and every judged call fails with the reason instead of a made-up score."""

    constrained = False

    def __init__(self, reason: str) -> None:
        self.model = "none"
        self.reason = reason

    async def complete(self, messages: list[ChatMessage], schema: dict[str, Any], max_tokens: int) -> str:
        raise BackendUnavailable(f"no LLM judge is available: {self.reason}")

    async def choose(self, messages: list[ChatMessage], options: Sequence[str]) -> dict[str, float]:
        raise BackendUnavailable(f"no LLM judge is available: {self.reason}")

    async def close(self) -> None:
        return None
