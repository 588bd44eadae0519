"""The interface every early-exit runtime implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Protocol, TypeVar

import numpy as np

from services.earlyexit.core.adapters import StoredBackbone, TenantAdapter
from services.earlyexit.core.policy import CascadeResult, ExitPolicy

T = TypeVar("T")


class MergedLayers(Protocol):
    """One LoRA tenant's updates merged into the backbone's layers: its fast path."""

    def layers(self, hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Every layer at once on the embeddings → the top layer's (batch, tokens, hidden) states."""


class GradientAttributor(Protocol):
    """A model's differentiable copy, for the attributions that need gradients or attention."""

    def integrated_gradients(self, ids: np.ndarray, exit_layer: int, target: int, steps: int) -> tuple[np.ndarray, float]:
        """Per token of one text's ``ids``: integrated gradients of ``target``'s probability at
        ``exit_layer``, along the word embeddings from an all-padding baseline; and the
        completeness gap."""

    def attention(self, ids: np.ndarray, exit_layer: int) -> np.ndarray:
        """Per token: the attention ``exit_layer`` pays it, over heads and real positions."""


class BackboneGraphs(Protocol):
    """The shared frozen backbone, a graph per stage, called synchronously on the backend's worker."""

    num_layers: int

    def embed(self, input_ids: np.ndarray) -> np.ndarray:
        """(batch, tokens) ids → (batch, tokens, hidden) embeddings."""

    def layer(
        self,
        layer: int,
        hidden: np.ndarray,
        attention_mask: np.ndarray,
        row_lora: tuple[np.ndarray, ...] | None = None,
    ) -> np.ndarray:
        """1-based ``layer`` on (batch, positions, hidden) states under a 1/0 key mask; with
        ``row_lora`` (``LORA_INPUTS``, a leading batch axis), each row's low-rank updates; without,
        none (the same answer as the frozen layer's)."""

    def merge_lora(self, adapter: TenantAdapter) -> MergedLayers:
        """``adapter``'s updates merged into every layer and compiled (seconds of CPU, not milliseconds)."""


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

    has_backbone: bool = False

    def attach_backbone(self, stored: StoredBackbone) -> None:
        """Load the shared adapter backbone's graphs (blocking: call it off the event loop)."""
        raise NotImplementedError(f"{self.runtime} does not serve tenant adapters yet")

    async def run_backbone(self, work: Callable[[BackboneGraphs], T], prepare: bool = False) -> T:
        """Run ``work`` against the shared backbone's graphs on this runtime; ``prepare``: beside
        the serving work, for slow preparation that must not hold requests up."""
        raise NotImplementedError(f"{self.runtime} does not serve tenant adapters yet")
