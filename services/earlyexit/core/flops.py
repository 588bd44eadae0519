"""Analytic FLOP counts (multiply-add = 2 FLOPs) for one text, as ELUE reports them.

Counts follow what the exported graphs compute for a text's own tokens: padding added by
batching is not charged to the text. Embedding lookups cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EncoderShape:
    hidden: int
    ffn: int
    num_labels: int

    def layer(self, tokens: int, active: int | None = None) -> int:
        """One layer over ``tokens`` tokens of which ``active`` compute queries, the attention
        output and the feed-forward (all of them unless given). Keys and values cover every
        token, and the attention products cover every query slot, as the graphs compute them."""
        d, active = self.hidden, tokens if active is None else active
        keys_values = 2 * 2 * d * d * tokens
        per_active = 2 * 2 * d * d + 2 * 2 * d * self.ffn  # query and output projections, feed-forward
        attention = 2 * 2 * tokens * tokens * d  # scores and weighted sum
        return keys_values + per_active * active + attention

    @property
    def head(self) -> int:
        """An exit head: the tanh pooler and the classifier over [CLS]."""
        return 2 * self.hidden * self.hidden + 2 * self.hidden * self.num_labels

    def multi_exit(self, tokens: int, exit_layer: int) -> int:
        """A text that ran ``exit_layer`` layers and their heads."""
        return exit_layer * (self.layer(tokens) + self.head)

    def plain(self, tokens: int, depth: int) -> int:
        """Every layer and one head at the top."""
        return depth * self.layer(tokens) + self.head

    def hashee(self, token_exit_layers: np.ndarray, depth: int) -> int:
        """A text whose tokens stop after their 1-based exit layers; one head at the top."""
        tokens = len(token_exit_layers)
        return (
            sum(self.layer(tokens, int((token_exit_layers > layer).sum())) for layer in range(depth))
            + self.head
        )
