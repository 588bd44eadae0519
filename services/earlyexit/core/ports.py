"""The interface every early-exit runtime implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from services.earlyexit.core.policy import CascadeResult, ExitPolicy


class EarlyExitBackend(ABC):
    """Classifies a padded batch with a named model under an exit policy."""

    #: Runtime name reported in every response, e.g. "onnxruntime" or "triton".
    runtime: str

    async def start(self) -> None:
        """Connect or load; raise BackendUnavailable when the runtime cannot be reached."""

    @abstractmethod
    async def classify(
        self, model: str, input_ids: np.ndarray, attention_mask: np.ndarray, policy: ExitPolicy
    ) -> CascadeResult:
        """Logits at each row's exit and the 1-based exit layer of each row."""

    async def close(self) -> None:
        """Release the runtime's resources."""
