"""What the critique core needs from the world: an LLM judge (one chat call that should answer
JSON) and sentence vectors for the creativity measures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from services.critique.core.prompts import ChatMessage


class Judge(Protocol):
    #: The model that judges, reported in every response.
    model: str
    #: Whether outputs are constrained to the schema while decoding (grammar or schema mode).
    constrained: bool

    async def complete(self, messages: list[ChatMessage], schema: dict[str, Any], max_tokens: int) -> str:
        """The judge's raw text answer; raises BackendUnavailable when the judge cannot answer."""
        ...

    async def choose(self, messages: list[ChatMessage], options: Sequence[str]) -> dict[str, float]:
        """How likely the judge's answer starts with each option (e.g. "A", "B"), read from its token
        probabilities, not from text it writes; raises BackendUnavailable when it cannot tell."""
        ...

    async def close(self) -> None: ...


class TextEmbedder(Protocol):
    async def embed(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), dimension] unit vectors; raises BackendUnavailable when it cannot."""
        ...


class RewardModel(Protocol):
    """A trained scalar scorer (Bradley-Terry): a higher reward means a better response."""

    #: The bundle that scores, e.g. "reward-model@3".
    model: str

    async def rewards(self, query: str, responses: list[str]) -> list[float]:
        """One reward per response to ``query``; raises BackendUnavailable when it cannot."""
        ...
