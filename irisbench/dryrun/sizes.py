"""The Janus-Pro releases' shapes: one definition for the dry run (``irisbench.dryrun.weightless``) and the
memory formula (``benchmarks/janus_memory.py``).

deepseek-ai/Janus-Pro-{1B,7B}: ``language_config`` 2048 x 24 (16 heads, MLP 5632) and 4096 x 30 (32 heads,
MLP 11008), no grouped-query attention; a 102,400-token vocabulary and an untied ``lm_head``; the vision,
aligner and VQ configs are transformers' Janus defaults (SigLIP-L/16 at 384 px, 576 image tokens, a 16,384-entry
VQ-16 codebook); the two releases pad with different ids (100002 and 100015), which the CFG unconditional
branch depends on. ``frozen_other`` (the understanding tower, both aligners, the VQ model, the image
embedding and head: frozen in IRIS) is a rounded estimate used by the formula only; the dry run counts the
built model's parameters instead.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JanusSize:
    """A Janus-Pro release's language-model shape and special token ids (its ``config.json``)."""

    name: str
    hidden: int
    layers: int
    heads: int
    mlp: int
    pad_id: int
    kv_heads: int = 0  # 0: as many as ``heads`` (the releases)
    vocab: int = 102400
    codes: int = 16384
    frozen_other: int = 0
    bos_id: int = 100000
    eos_id: int = 100001
    boi_id: int = 100016
    image_token_id: int = 100581

    @property
    def kv(self) -> int:
        """Key/value heads."""
        return self.kv_heads or self.heads

    def block_params(self) -> int:
        """One decoder block: q, o (hidden^2 each); k, v (hidden x kv width each); gate, up, down; two norms."""
        h, kv = self.hidden, self.hidden * self.kv // self.heads
        return 2 * h * h + 2 * h * kv + 3 * h * self.mlp + 2 * h

    def trainable(self) -> int:
        """LLM blocks, final norm, token embeddings and an untied ``lm_head`` (IRIS trains these)."""
        return self.layers * self.block_params() + self.hidden + 2 * self.vocab * self.hidden

    def total(self) -> int:
        return self.trainable() + self.frozen_other


# frozen_other: SigLIP-L/16 at 384 px (~303 M), the two aligners, the VQ-16 model (~72 M) and the image
# embedding / head (generation_head: hidden -> 16,384): rounded estimates, a few percent of the total
JANUS_SIZES = {
    "janus-pro-1b": JanusSize("janus-pro-1b", 2048, 24, 16, 5632, pad_id=100002, frozen_other=430_000_000),
    "janus-pro-7b": JanusSize("janus-pro-7b", 4096, 30, 32, 11008, pad_id=100015, frozen_other=500_000_000),
}

__all__ = ["JANUS_SIZES", "JanusSize"]
