"""The shapes LM's exact decode step: a hand-written Llama layer over a static KV cache.

Used by the fast sampling loop (``irisbench.policies.shapes_decode``). It performs the floating-point
operations transformers' ``LlamaForCausalLM`` (eager attention, fp32) performs for one new token, on the
same values, so its logits equal the reference loop's bit for bit where the CPU's sgemm rounds a row alike
at any row count (``sgemm_rows_invariant``: true on the Intel Xeon with AVX-512 + AMX measured, MKL sgemm):

- every matmul keeps the reference's operand values and a row count in the same BLAS regime: MKL's sgemm
  rounds a row the same way for any row count >= 16 (below that it takes other kernels; K = 512 is the
  last to converge), so fewer rows than ``MIN_ROWS`` multiply exactly as transformers does (one
  ``F.linear`` per projection, the whole vocabulary) and more rows use fused, pre-transposed weights
  (q/k/v and gate/up as one matmul each, the output layer restricted to the allowed vocabulary: a column
  subset of a product is that column);
- ``F.rms_norm`` is LlamaRMSNorm's op sequence in one call; RoPE's ``cat(-x2, x1) * sin`` is
  ``flip(x) * sin'`` with the sign folded into the table (negation is exact); ``baddbmm(mask, q, K^T,
  alpha)`` is ``q @ K^T * scale + mask`` (alpha scales the finished dot product);
- the attention spans the reference cache's columns exactly (attending over the whole pre-allocated width
  sums the softmax in other vector lanes: 1e-7 off, and slower), except that leading columns masked in
  every row of a group may be skipped in multiples of ``LANES`` while at least ``LANES`` remain: their
  exp(-inf) = 0 leaves every lane's partial sum and every dot product unchanged (checked over widths
  32..139 and skips 16..64 on one and two threads).

Where the step's time goes (128 rows: 64 prompts with CFG, one thread, shared machine): the 17 matmuls
(~0.5 GFLOP, ~200 GFLOP/s: ~3.4 ms), attention (8 ``baddbmm``/``bmm`` reading ~45 MB of fp32 keys and values:
~4-5 ms, memory-bound), ~130 small kernels (~1.5 ms). ``torch.compile`` (inductor) of the step was slower
(20 vs 10.7 ms at a fixed shape, also with ``max-autotune-no-cudagraphs``) and not bit-exact (6.7e-6).

Where the probe says no (MKL restricted to AVX2, as on an AVX2-only CPU: ``MKL_ENABLE_INSTRUCTIONS=AVX2
ATEN_CPU_CAPABILITY=avx2`` on the Xeon above), a row's product changes with the row count even in the
reference loop itself, and the fast loop's logits differ from the reference's by round-off (largest gap
1.05e-5 on logits of magnitude ~10 in the tests; the same tokens there).

Every tensor is created on the device of the model's weights.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    Out = tuple[torch.Tensor, torch.Tensor | slice]  # an output layer: (its transpose (C, V'), vocabulary rows)

MIN_ROWS = 16  # the smallest row count whose sgemm rounding equals the reference's at any larger count
LANES = 16  # softmax's vector width (AVX-512 floats; a multiple of AVX2's 8)


@functools.cache
def sgemm_rows_invariant(hidden: int = 192, inter: int = 512) -> bool:
    """Whether this CPU's sgemm gives the fast step the reference's bits at these sizes: a row's product is
    the same at every row count >= ``MIN_ROWS`` and through the fused, transposed weights, for the
    contraction sizes ``hidden`` and ``inter`` (default: the shipped bases'). Probed once per process on
    fixed random matrices, one torch thread; True means the fast loop reproduces the reference loop bit for bit."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for k, n in ((hidden, 3 * hidden), (inter, hidden), (hidden, 2 * inter)):
            x, w = torch.randn(4 * MIN_ROWS, k, generator=g), torch.randn(n, k, generator=g)
            full, fused = F.linear(x, w), torch.mm(x, w.t().contiguous())
            if not torch.equal(fused, full):
                return False
            for r in (MIN_ROWS, MIN_ROWS + 1, 2 * MIN_ROWS + 3):
                if not torch.equal(F.linear(x[:r], w), full[:r]):
                    return False
            half = n // 2  # a column block of a fused weight is that block's own product
            if not torch.equal(fused[:, :half], F.linear(x, w[:half])):
                return False
    finally:
        torch.set_num_threads(before)
    return True


def supports_fast_decode(model: Any) -> bool:
    """True for the plain fp32 Llama of ``build_model`` (what the hand-written step reproduces), LoRA adapters
    (peft) included: ``Weights.of`` reads their effective weights."""
    import torch

    c = getattr(model, "config", None)
    if c is None or getattr(c, "model_type", None) != "llama":
        return False
    rope = getattr(c, "rope_parameters", None) or {}
    return (c.hidden_act == "silu" and not c.attention_bias and not c.mlp_bias
            and rope.get("rope_type", "default") == "default"
            and c.num_key_value_heads == c.num_attention_heads
            and next(model.parameters()).dtype == torch.float32
            and getattr(model.model, "rotary_emb", None) is not None)


def _weight(linear: Any) -> torch.Tensor:
    """A linear layer's weight; for a peft LoRA layer with enabled, unmerged adapters ``W + scaling B A`` (what
    ``merge_and_unload`` would write, computed alike), so that the step samples from the adapted model."""
    base = getattr(linear, "base_layer", None)
    if base is None:
        return linear.weight
    w = base.weight
    if getattr(linear, "disable_adapters", False) or getattr(linear, "merged", False):
        return w
    for name in linear.active_adapters:
        w = w + linear.get_delta_weight(name)
    return w


@dataclass
class Layer:
    """One decoder layer's weights: the module's own (N, K) matrices, as transformers multiplies them, and
    fused, transposed copies (q/k/v, gate/up) for the many-row path."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor
    gate: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor
    ln1: torch.Tensor
    ln2: torch.Tensor
    qkv_t: torch.Tensor  # (C, 3C)
    o_t: torch.Tensor
    gate_up_t: torch.Tensor  # (C, 2I)
    down_t: torch.Tensor


@dataclass
class Weights:
    """The model's weights in the layouts the step wants, read once per chunk."""

    embed: torch.Tensor
    layers: list[Layer]
    norm: torch.Tensor
    head: torch.Tensor  # (V, C), the model's lm_head
    cos: torch.Tensor  # (P, D): the model's own RoPE table
    sin: torch.Tensor  # (P, D) with the first half negated: rotate_half folded in
    heads: int
    head_dim: int
    inter: int
    eps: float

    @classmethod
    def of(cls, model: Any) -> Weights:
        import torch

        c, inner = model.config, model.model
        layers = []
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            q, k, v, o = (_weight(x) for x in (a.q_proj, a.k_proj, a.v_proj, a.o_proj))
            g, u, dn = (_weight(x) for x in (m.gate_proj, m.up_proj, m.down_proj))
            layers.append(Layer(q=q, k=k, v=v, o=o, gate=g, up=u, down=dn, ln1=layer.input_layernorm.weight,
                                ln2=layer.post_attention_layernorm.weight, qkv_t=torch.cat([q, k, v]).t().contiguous(),
                                o_t=o.t().contiguous(), gate_up_t=torch.cat([g, u]).t().contiguous(),
                                down_t=dn.t().contiguous()))
        embed = inner.embed_tokens.weight
        positions = torch.arange(c.max_position_embeddings, device=embed.device).unsqueeze(0)
        cos, sin = inner.rotary_emb(embed[:1].unsqueeze(0), positions)
        d = c.hidden_size // c.num_attention_heads
        sin = torch.cat([-sin[0, :, : d // 2], sin[0, :, d // 2:]], dim=-1)
        return cls(embed=embed, layers=layers, norm=inner.norm.weight, head=model.lm_head.weight, cos=cos[0],
                   sin=sin, heads=c.num_attention_heads, head_dim=d, inter=c.intermediate_size,
                   eps=float(c.rms_norm_eps))

    def out(self, ids: torch.Tensor | slice) -> Out:
        """The output layer restricted to vocabulary rows ``ids``: (its transpose (C, V'), ``ids``)."""
        return self.head[ids].t().contiguous(), ids


class Decoder:
    """A pre-allocated KV cache of ``rows`` rows x ``width`` columns and one-token decode steps.

    Keys and values are stored (rows * heads, width, head_dim) and the additive mask (rows * heads, 1,
    width), so attention is one ``baddbmm`` and one ``bmm`` over the columns written so far. Column ``j`` of
    a row holds the key/value of one of its tokens, or is masked; positions are explicit.
    """

    def __init__(self, w: Weights, rows: int, width: int) -> None:
        import torch

        self.w, self.rows, self.width = w, rows, width
        dev, dt = w.embed.device, w.embed.dtype
        shape = (rows * w.heads, width, w.head_dim)
        self.k = [torch.zeros(shape, device=dev, dtype=dt) for _ in w.layers]
        self.v = [torch.zeros(shape, device=dev, dtype=dt) for _ in w.layers]
        self.neg = torch.finfo(dt).min  # transformers' additive mask value
        self.mask = torch.full((rows * w.heads, 1, width), self.neg, device=dev, dtype=dt)
        self.groups = [(0, rows * w.heads, 0)]  # attention row groups (first, end, first column read)

    def load(self, cache: Any, src: torch.Tensor, valid: torch.Tensor, *, dst: slice = slice(None),
             start: int = 0) -> None:
        """Copy rows ``src`` of a transformers ``DynamicCache`` (its L columns) into rows ``dst``, columns
        ``start:start+L``; ``valid`` (len(src), L) marks real tokens."""
        import torch

        h, d = self.w.heads, self.w.head_dim
        for i, layer in enumerate(cache.layers):
            n = layer.keys.shape[2]
            self.k[i].view(self.rows, h, self.width, d)[dst, :, start:start + n] = layer.keys[src]
            self.v[i].view(self.rows, h, self.width, d)[dst, :, start:start + n] = layer.values[src]
        n = valid.shape[1]
        self.mask.view(self.rows, h, self.width)[dst, :, start:start + n] = \
            torch.where(valid, 0.0, self.neg).unsqueeze(1)

    def skip_padding(self, sizes: list[int], col: int) -> None:
        """Let consecutive row groups of ``sizes`` rows skip the leading columns masked in all their rows, in
        multiples of ``LANES``, as long as at least ``LANES`` columns remain at column ``col``. Exact: the
        skipped scores are exp(-inf) = 0 in every vector lane of the softmax sums, and the dot products
        over the remaining columns keep their lanes and kernels (more than 8 columns)."""
        import torch

        h, first = self.w.heads, 0
        real = (self.mask.view(self.rows, h, self.width)[:, 0, :col] == 0).to(torch.int8)
        lead = torch.where(real.any(1), real.argmax(1), col)  # leading masked columns per row
        self.groups = []
        for n in sizes:
            skip = min(int(lead[first:first + n].min()), col + 1 - LANES) // LANES * LANES if n else 0
            self.groups.append((first * h, (first + n) * h, max(skip, 0)))
            first += n

    def keep(self, idx: torch.Tensor) -> None:
        """Keep rows ``idx`` (in that order) only."""
        r, rest = self.rows, self.w.heads * self.width
        self.k = [x.view(r, -1)[idx].view(-1, self.width, self.w.head_dim) for x in self.k]
        self.v = [x.view(r, -1)[idx].view(-1, self.width, self.w.head_dim) for x in self.v]
        self.mask = self.mask.view(r, rest)[idx].view(-1, 1, self.width)
        self.rows = int(idx.shape[0])
        self.groups = [(0, self.rows * self.w.heads, 0)]

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, col: int, out: Out,
             live: torch.Tensor | None = None) -> torch.Tensor:
        """Feed ``tokens`` (R,) at ``positions`` (R,) into column ``col`` and return the logits (R, V') over
        the vocabulary rows of ``out`` (``Weights.out``). ``live`` (R,) bool: rows whose column ``col`` is a
        real token (default: all). Fewer than ``MIN_ROWS`` rows multiply exactly as transformers does (one
        ``F.linear`` per projection, the whole vocabulary), whose rounding then depends on the shapes."""
        import torch
        import torch.nn.functional as F

        w, r, width = self.w, tokens.shape[0], self.width
        h, d, c, n = w.heads, w.head_dim, w.heads * w.head_dim, w.inter
        few = r < MIN_ROWS
        x = w.embed[tokens]
        cos, sin = w.cos[positions].view(r, 1, 1, d), w.sin[positions].view(r, 1, 1, d)
        if live is None:
            self.mask[:, :, col] = 0.0
        else:
            self.mask[:, 0, col] = torch.where(live, 0.0, self.neg).repeat_interleave(h)
        mask = self.mask[:, :, : col + 1]
        for i, lw in enumerate(w.layers):
            y = F.rms_norm(x, (c,), lw.ln1, w.eps)
            if few:
                qkv = torch.stack([F.linear(y, lw.q), F.linear(y, lw.k), F.linear(y, lw.v)], 1).view(r, 3, h, d)
            else:
                qkv = torch.mm(y, lw.qkv_t).view(r, 3, h, d)
            qk = qkv[:, :2]
            qk = qk * cos + qk.unflatten(-1, (2, d // 2)).flip(-2).flatten(-2) * sin  # RoPE, q and k at once
            self.k[i].view(r, h, width, d)[:, :, col] = qk[:, 1]
            self.v[i].view(r, h, width, d)[:, :, col] = qkv[:, 2]
            q = qk[:, 0].reshape(r * h, 1, d)
            if len(self.groups) == 1 and not self.groups[0][2]:
                o = self._attend(q, mask, self.k[i][:, : col + 1], self.v[i][:, : col + 1]).view(r, c)
            else:
                o = torch.empty((r * h, 1, d), device=x.device, dtype=x.dtype)
                for a, z, s0 in self.groups:
                    self._attend(q[a:z], self.mask[a:z, :, s0: col + 1], self.k[i][a:z, s0: col + 1],
                                 self.v[i][a:z, s0: col + 1], out=o[a:z])
                o = o.view(r, c)
            x = x + (F.linear(o, lw.o) if few else torch.mm(o, lw.o_t))
            y = F.rms_norm(x, (c,), lw.ln2, w.eps)
            if few:
                x = x + F.linear(F.silu(F.linear(y, lw.gate)) * F.linear(y, lw.up), lw.down)
            else:
                gu = torch.mm(y, lw.gate_up_t)
                x = x + torch.mm(F.silu(gu[:, :n]) * gu[:, n:], lw.down_t)
        y = F.rms_norm(x, (c,), w.norm, w.eps)
        return (F.linear(y, w.head)[:, out[1]] if few else torch.mm(y, out[0])).float()

    def _attend(self, q: torch.Tensor, mask: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                out: torch.Tensor | None = None) -> torch.Tensor:
        """transformers' eager attention for one query: softmax(q k^T * scale + mask) v."""
        import torch

        att = torch.baddbmm(mask, q, k.transpose(1, 2), alpha=self.w.head_dim ** -0.5)
        att = torch.softmax(att, dim=-1, dtype=torch.float32).to(att.dtype)
        return torch.bmm(att, v) if out is None else torch.bmm(att, v, out=out)


__all__ = ["LANES", "MIN_ROWS", "Decoder", "Layer", "Weights", "sgemm_rows_invariant", "supports_fast_decode"]
