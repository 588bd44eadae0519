"""WordPiece tokenization and padding, shared by every service that feeds a transformer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


@dataclass(frozen=True)
class EncodedText:
    ids: np.ndarray  # int64 token ids, special tokens included
    truncated: bool


class TextEncoder:
    """WordPiece tokenization with the model's truncation limit."""

    def __init__(self, tokenizer_path: Path, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_tokens)

    def encode(self, texts: list[str]) -> list[EncodedText]:
        return [
            EncodedText(np.asarray(e.ids, dtype=np.int64), truncated=bool(e.overflowing))
            for e in self.tokenizer.encode_batch(texts)
        ]

    def tokens(self, ids: np.ndarray) -> list[str]:
        """The vocabulary entry of each id, e.g. ``##ful``."""
        return [self.tokenizer.id_to_token(int(i)) or "[UNK]" for i in ids]


def pad_batch(encoded: list[EncodedText]) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest sequence in the batch: (input_ids, attention_mask)."""
    width = max(len(e.ids) for e in encoded)
    ids = np.zeros((len(encoded), width), dtype=np.int64)
    mask = np.zeros((len(encoded), width), dtype=np.int64)
    for row, e in enumerate(encoded):
        ids[row, : len(e.ids)] = e.ids
        mask[row, : len(e.ids)] = 1
    return ids, mask
