"""A tiny deterministic SentencePiece-looking tokenizer.

Words (with their leading space), single punctuation marks and single whitespace
characters are tokens. The vocabulary string of a token spells a leading space as ``▁``
like SentencePiece does (``"▁What"``), a word at the very start of the input gets the
dummy ``▁`` prefix too, and ids are a stable hash of that string, so the same text always
gives the same ids in every process. ``<unk>``, ``<s>`` and ``</s>`` are 0, 1 and 2, and
are recognised when they appear literally in the text (chat templates write ``<s>``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

__all__ = ["BOS", "EOS", "Piece", "Tokenizer", "VOCAB_SIZE"]

VOCAB_SIZE = 32000
BOS = (1, "<s>")
EOS = (2, "</s>")
_SPECIAL = {"<unk>": 0, "<s>": 1, "</s>": 2}
_PIECE = re.compile(r"<unk>|<s>|</s>| ?\w+| ?[^\w\s]|\s", re.UNICODE)


@dataclass(frozen=True)
class Piece:
    """A token of some text: id, vocabulary string, decoded text, and character offsets."""

    id: int
    vocab: str
    text: str
    start: int
    stop: int
    special: bool = False


def token_id(vocab: str) -> int:
    """The stable id of a vocabulary string."""
    special = _SPECIAL.get(vocab)
    if special is not None:
        return special
    digest = hashlib.blake2b(vocab.encode("utf-8"), digest_size=8).digest()
    return 3 + int.from_bytes(digest, "big") % (VOCAB_SIZE - 3)


class Tokenizer:
    """Split text into :class:`Piece` objects; the decoded texts concatenate back to the input."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[Piece]:
        """Tokenize `text`, with ``<s>`` first when `add_special_tokens`."""
        pieces: list[Piece] = []
        if add_special_tokens:
            pieces.append(Piece(BOS[0], BOS[1], BOS[1], 0, 0, special=True))
        for m in _PIECE.finditer(text):
            raw = m.group(0)
            if raw in _SPECIAL:
                pieces.append(Piece(_SPECIAL[raw], raw, raw, m.start(), m.end(), special=True))
                continue
            if raw.startswith(" ") and len(raw) > 1:
                vocab = "▁" + raw[1:]
            elif raw == " ":
                vocab = "▁"
            elif m.start() == 0 and (raw[0].isalnum() or raw[0] == "_"):
                vocab = "▁" + raw  # SentencePiece's dummy prefix
            else:
                vocab = raw
            pieces.append(Piece(token_id(vocab), vocab, raw, m.start(), m.end()))
        return pieces

    def count(self, text: str, add_special_tokens: bool = True) -> int:
        """The number of tokens `encode` would give (without building them: bodies can be 2 MiB)."""
        return len(_PIECE.findall(text)) + (1 if add_special_tokens else 0)

    def split(self, text: str) -> list[Piece]:
        """Tokens of generated text (no BOS, and no dummy prefix: it continues a prompt)."""
        pieces = []
        for m in _PIECE.finditer(text):
            raw = m.group(0)
            if raw in _SPECIAL:
                pieces.append(Piece(_SPECIAL[raw], raw, raw, m.start(), m.end(), special=True))
                continue
            vocab = "▁" + raw[1:] if raw.startswith(" ") else raw
            pieces.append(Piece(token_id(vocab), vocab, raw, m.start(), m.end()))
        return pieces
