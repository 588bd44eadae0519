"""What the critique core needs from an LLM judge: one chat call that should answer JSON."""

from __future__ import annotations

from typing import Any, Protocol

from services.common.errors import BackendUnavailable
from services.critique.core.prompts import ChatMessage


class Judge(Protocol):
    #: The model that judges, reported in every response.
    model: str
    #: Whether outputs are constrained to the schema while decoding (grammar or schema mode).
    constrained: bool

    async def complete(self, messages: list[ChatMessage], schema: dict[str, Any], max_tokens: int) -> str:
        """The judge's raw text answer; raises BackendUnavailable when the judge cannot answer."""
        ...

    async def close(self) -> None: ...


class MissingJudge:
    """Stands in when no judge could be set up, so the service still serves what needs none
    (ListRubrics) and every judged call fails with the reason instead of a made-up score."""

    constrained = False

    def __init__(self, reason: str) -> None:
        self.model = "none"
        self.reason = reason

    async def complete(self, messages: list[ChatMessage], schema: dict[str, Any], max_tokens: int) -> str:
        raise BackendUnavailable(f"no LLM judge is available: {self.reason}")

    async def close(self) -> None:
        return None
