"""The shapes-world LM's vocabulary: special tokens, prompt words, plan words and image codes in one id space.

Ids run: the special tokens, then the words (prompt words, then plan-only words), then the image tokenizer's
codes. Saved inside a checkpoint's ``irisbench_policy.json`` and checked field by field when read back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from irisbench.core.errors import IrisbenchError, UsageError
from irisbench.world.prompts import UnknownWordsError

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<null>", "<bop>", "<eop>", "<boi>", "<eoi>")


class ShapesCheckpointError(IrisbenchError, ValueError):
    """A shapes-lm checkpoint folder that is missing a file or whose parts do not fit together."""


class UnknownTokensError(UnknownWordsError):
    """Text with words outside the policy's vocabulary (``.words`` lists them, so does the message)."""

    def __init__(self, kind: str, text: str, words: Sequence[str]) -> None:
        ValueError.__init__(self, f"{kind} {text!r} has words outside the shapes-lm vocabulary: "
                            f"{', '.join(words)}")
        self.words = tuple(words)


class ShapesVocab:
    """Token ids: specials, then words (prompt words, then plan-only words), then image codes.

    ``text_ids`` (the plan's allowed sub-vocabulary) are the plan words followed by EOP; image code
    ``k`` is token ``image_offset + k``.
    """

    def __init__(self, prompt_words: Sequence[str], plan_words: Sequence[str], codebook_size: int) -> None:
        self.prompt_words = tuple(prompt_words)
        self.plan_words = tuple(plan_words)
        for kind, ws in (("prompt", self.prompt_words), ("plan", self.plan_words)):
            if len(set(ws)) != len(ws) or not all(isinstance(w, str) and w and " " not in w for w in ws):
                raise ValueError(f"{kind} words must be distinct non-empty single words, got {ws}")
        if codebook_size < 1:
            raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
        self.words = tuple(dict.fromkeys(self.prompt_words + self.plan_words))
        self.codebook_size = int(codebook_size)
        self.special = {name: i for i, name in enumerate(SPECIAL_TOKENS)}
        self.word_offset = len(SPECIAL_TOKENS)
        self._word_id = {w: self.word_offset + i for i, w in enumerate(self.words)}
        self.image_offset = self.word_offset + len(self.words)
        self.size = self.image_offset + self.codebook_size
        self.text_ids = np.array([self._word_id[w] for w in self.plan_words] + [self.eop], dtype=np.int64)
        self._prompt_set = frozenset(self.prompt_words)
        self._plan_set = frozenset(self.plan_words)

    pad = property(lambda self: self.special["<pad>"])
    bos = property(lambda self: self.special["<bos>"])
    null = property(lambda self: self.special["<null>"])
    bop = property(lambda self: self.special["<bop>"])
    eop = property(lambda self: self.special["<eop>"])
    boi = property(lambda self: self.special["<boi>"])
    eoi = property(lambda self: self.special["<eoi>"])  # reserved: the image length is fixed

    @classmethod
    def from_world(cls, codebook_size: int) -> ShapesVocab:
        from irisbench.world.plan import PLAN_WORDS
        from irisbench.world.prompts import PROMPT_WORDS

        return cls(PROMPT_WORDS, PLAN_WORDS, codebook_size)

    def _encode(self, kind: str, text: str, allowed: frozenset[str]) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"{kind} must be a str, got {type(text).__name__}")
        words = text.lower().split()
        unknown = list(dict.fromkeys(w for w in words if w not in allowed))
        if unknown:
            raise UnknownTokensError(kind, text, unknown)
        return [self._word_id[w] for w in words]

    def encode_prompt(self, text: str) -> list[int]:
        """Word ids of a prompt (case and whitespace normalised as ``parse_prompt`` does)."""
        ids = self._encode("prompt", text, self._prompt_set)
        if not ids:
            raise UsageError("prompt is empty")
        return ids

    def encode_plan(self, text: str) -> list[int]:
        """Word ids of a plan, without the closing EOP."""
        return self._encode("plan", text, self._plan_set)

    def decode_words(self, ids: Sequence[int]) -> str:
        """Words of ``ids``, stopping at EOP; specials and image codes are not words."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eop:
                break
            if not self.word_offset <= i < self.image_offset:
                raise ValueError(f"token id {i} is not a word (words are ids {self.word_offset}.."
                                 f"{self.image_offset - 1})")
            out.append(self.words[i - self.word_offset])
        return " ".join(out)

    def to_json(self) -> dict[str, Any]:
        return {"special_tokens": list(SPECIAL_TOKENS), "prompt_words": list(self.prompt_words),
                "plan_words": list(self.plan_words), "words": list(self.words),
                "image_offset": self.image_offset, "codebook_size": self.codebook_size, "size": self.size}

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str) -> ShapesVocab:
        for key in ("special_tokens", "prompt_words", "plan_words", "codebook_size"):
            if key not in d:
                raise ShapesCheckpointError(f"{where}: field 'vocab.{key}' is missing")
        if list(d["special_tokens"]) != list(SPECIAL_TOKENS):
            raise ShapesCheckpointError(f"{where}: field 'vocab.special_tokens' is {d['special_tokens']}, "
                                        f"expected {list(SPECIAL_TOKENS)}")
        try:
            v = cls(d["prompt_words"], d["plan_words"], int(d["codebook_size"]))
        except (TypeError, ValueError) as e:
            raise ShapesCheckpointError(f"{where}: field 'vocab': {e}") from None
        for key in ("words", "image_offset", "size"):
            if key in d and d[key] != v.to_json()[key]:
                raise ShapesCheckpointError(f"{where}: field 'vocab.{key}' is {d[key]!r}, but the word lists "
                                            f"give {v.to_json()[key]!r}")
        return v
