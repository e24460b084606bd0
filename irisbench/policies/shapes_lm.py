"""The shapes-world policy: a small unified autoregressive text-to-image LM (Chameleon/Emu3 shape).

One causal LM (``transformers.LlamaForCausalLM``) holds special tokens, prompt words, plan words and
the image tokenizer's codes in a single vocabulary (``shapes_vocab.ShapesVocab``) and reads/writes one
sequence::

    cond:   [BOS] prompt words [BOP] plan words [EOP] [BOI] 64 image codes
    uncond: [BOS] [NULL] [BOI] 64 image codes          (learned unconditional prompt, for CFG)

Sampling writes the plan (conditional model only, stopping at EOP or at ``max_plan_tokens``, where
EOP is forced), then the 64 image codes with classifier-free guidance ``u + w (c - u)``. Decoding is
constrained: plan steps choose among the plan words + EOP, image steps among the image codes.
Per-token statistics (log-prob of the chosen token, self-certainty ``logsumexp(z) - mean(z)`` with
IRIS's ``+log|V|`` offset kept, entropy) are computed in fp32 over that step's *allowed* sub-vocabulary
from the raw (temperature-1, un-truncated) logits: the conditional ones by default, the CFG-mixed ones
with ``stats_source="guided"`` (plan tokens are never guided, so both sources agree on them).

Sampling is KV-cached, with cond and uncond rows in one batch. The reference loop (``generate(fast=False)``,
``shapes_decode_reference``) runs transformers' forward with a ``DynamicCache`` and defines the numbers; the
default loop (``irisbench.policies.shapes_decode``) performs the same arithmetic without its overheads
and reproduces its logits bit for bit on the CPU measured (about 1.8x faster on one thread); prompts are
left-padded and every row carries explicit position ids, so padding never changes a row's positions.
Plan lengths differ per row: rows that finished feed masked-out padding until all rows are done, then
the image phase re-prefills ``prefix + plan + [BOI]`` (left-padded, cond and uncond rows together)
so the 64 image steps run in lockstep. Every row's randomness comes from its own seed: 64 image
uniforms then ``max_plan_tokens`` plan uniforms are pre-drawn from a per-row ``torch.Generator`` and
tokens are drawn by inverse CDF, so a sample does not depend on the batch it is in, up to float
round-off of batched matmuls (a token can flip only if its uniform lands within ~1e-6 of a CDF step).

Departures from IRIS / Janus-Pro: the "CoT" is the world's fixed-grammar plan, not free text; the
uncond row is ``[BOS] [NULL] [BOI]`` (a learned null token, no plan) rather than BOS/BOI with padding
in between; the statistics come from the sampling loop's own logits (no second pass) and over the
allowed sub-vocabulary (so |V| is the plan vocabulary or the codebook, not the whole LM vocabulary).

Self-certainty vocabulary (``vocab_sizes``, recorded as ``Rollout.settings["vocab_size"]``): k_text = 24 (the
shipped base's plan words + EOP) and k_image = 763 (its codebook), so the kept offsets are log 24 = 3.18 < log 763
= 6.64, the opposite order to Janus-Pro's log 102,400 = 11.54 > log 16,384 = 9.70. ``nsc`` (token pooling, offsets
kept) therefore pays a plan token less self-certainty than an image token for its offset alone; the reward option
``offset_vocab`` (``irisbench.train.rewards``; preset ``iris-shapes-janus-offsets``) runs the world with Janus-Pro's
offsets, and docs/self-certainty.md measures the per-plan-token bonus under each order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from irisbench.core.errors import UsageError
from irisbench.policies.base import (
    IMAGE,
    STATS_SOURCES,
    TEXT,
    Rollout,
    TokenLogits,
    check_sampling_args,
    row_seeds,
)
from irisbench.policies.shapes_vocab import (
    ShapesCheckpointError,
    ShapesVocab,
    UnknownTokensError,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from irisbench.world.tokenizer import PatchTokenizer

FORMAT = "irisbench.shapes-lm"
FORMAT_VERSION = 1
POLICY_FILE = "irisbench_policy.json"
TOKENIZER_FILE = "image_tokenizer.safetensors"
MODEL_FILES = ("config.json", "model.safetensors")
SHIPPED_BASE = Path(__file__).resolve().parents[1] / "assets" / "shapes-base"
SHIPPED_TEXTURES_BASE = SHIPPED_BASE.parent / "textures-base"  # irisbench.world.textures
SHIPPED_BASES = {"shapes-base": SHIPPED_BASE, "textures-base": SHIPPED_TEXTURES_BASE}  # policy name -> folder
MAX_POSITIONS = 128  # 1 + 10 prompt words + 1 + 32 plan tokens + 1 + 64 codes = 109 at most


@dataclass(frozen=True)
class SamplingDefaults:
    """Settings used when ``sample`` is called without them (stored in the checkpoint)."""

    cfg: float = 3.0
    temperature: float = 1.0
    top_k: int | None = None
    stats_source: str = "conditional"
    max_plan_tokens: int = 32  # EOP included; a 5-object plan has 29 words
    batch_size: int = 64  # rows per forward (x2 with CFG); does not change results

    def check(self) -> None:
        check_sampling_args(1, self.cfg, self.temperature, self.top_k)
        if self.stats_source not in STATS_SOURCES:
            raise UsageError(f"stats_source must be one of {STATS_SOURCES}, got {self.stats_source!r}")
        if not isinstance(self.max_plan_tokens, int) or self.max_plan_tokens < 1:
            raise UsageError(f"max_plan_tokens must be an int >= 1, got {self.max_plan_tokens!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UsageError(f"batch_size must be an int >= 1, got {self.batch_size!r}")




def build_model(vocab_size: int, *, hidden_size: int = 192, num_layers: int = 4, num_heads: int = 4,
                intermediate_size: int = 512, seed: int = 0) -> Any:
    """A randomly initialised ``LlamaForCausalLM`` (untied embeddings, eager attention, fp32)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=False,
        pad_token_id=0, bos_token_id=1, eos_token_id=None,
    )
    config._attn_implementation = "eager"  # faster than sdpa for this size on CPU (measured ~2x)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.float().eval()


def _right_pad(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


class ShapesLMPolicy:
    """A shapes-world text-to-image policy: plan text, then 64 image codes, from one causal LM."""

    name = "shapes-lm"
    world = "shapes"
    lora_scope = "model.layers."  # where LoRA adapters may go (irisbench.policies.lora): the decoder blocks

    def __init__(self, model: Any, vocab: ShapesVocab, image_tokenizer: PatchTokenizer,
                 defaults: SamplingDefaults | None = None, checkpoint: str | None = None) -> None:
        self.model = model
        self.vocab = vocab
        self.image_tokenizer = image_tokenizer
        self.defaults = defaults or SamplingDefaults()
        self.defaults.check()
        self.checkpoint = checkpoint
        self.num_image_tokens = int(image_tokenizer.num_tokens)
        if image_tokenizer.codebook_size != vocab.codebook_size:
            raise ValueError(f"image tokenizer has {image_tokenizer.codebook_size} codes, the vocabulary "
                             f"{vocab.codebook_size}")
        if model.config.vocab_size != vocab.size:
            raise ValueError(f"model vocab_size {model.config.vocab_size} != vocabulary size {vocab.size}")

    @property
    def vocab_sizes(self) -> dict[str, int]:
        """Sizes of the plan vocabulary (plan words + EOP) and of the image codebook: the distributions the
        per-token statistics are taken over."""
        return {"text": int(len(self.vocab.text_ids)), "image": int(self.vocab.codebook_size)}

    @property
    def max_completion_length(self) -> int:
        """The widest rollout row: ``max_plan_tokens`` (EOP included) plus the image tokens."""
        return int(self.defaults.max_plan_tokens) + self.num_image_tokens

    # ------------------------------------------------------------------ construction / persistence
    @classmethod
    def create(cls, image_tokenizer: PatchTokenizer, *, hidden_size: int = 192, num_layers: int = 4,
               num_heads: int = 4, intermediate_size: int = 512, seed: int = 0,
               defaults: SamplingDefaults | None = None) -> ShapesLMPolicy:
        """A randomly initialised policy over the world's prompt/plan words and ``image_tokenizer``."""
        vocab = ShapesVocab.from_world(image_tokenizer.codebook_size)
        model = build_model(vocab.size, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                            intermediate_size=intermediate_size, seed=seed)
        return cls(model, vocab, image_tokenizer, defaults)

    def save(self, path: str | Path, state_dict: dict[str, Any] | None = None) -> Path:
        """Write a ``save_pretrained`` folder, ``irisbench_policy.json`` and ``image_tokenizer.safetensors``.

        ``state_dict``: the weights to write instead of the model's own (whole weights of a sharded model).
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with _quiet_transformers():
            self.model.save_pretrained(str(path), state_dict=state_dict)
        self.image_tokenizer.save(path / TOKENIZER_FILE)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "policy": self.name,
                "num_image_tokens": self.num_image_tokens, "vocab": self.vocab.to_json(),
                "sampling": asdict(self.defaults)}
        (path / POLICY_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None, **overrides: Any) -> ShapesLMPolicy:
        """Load a folder written by ``save``; ``overrides`` replace sampling defaults (e.g. ``cfg=5``).

        ``device``: where the model lives (``irisbench.core.devices.resolve_device``; default: the CPU, the
        project's reference device for the shapes world, unless ``IRISBENCH_DEVICE`` says otherwise).

        Raises ``ShapesCheckpointError`` naming the missing file or the mismatching field.
        """
        from safetensors import safe_open

        from irisbench.world.tokenizer import PatchTokenizer

        path = Path(path)
        if not path.is_dir():
            raise ShapesCheckpointError(f"shapes-lm checkpoint {path} is not a folder")
        for fname in (*MODEL_FILES, POLICY_FILE, TOKENIZER_FILE):
            if not (path / fname).is_file():
                raise ShapesCheckpointError(f"shapes-lm checkpoint {path} lacks the file {fname}")
        meta_path = path / POLICY_FILE
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise ShapesCheckpointError(f"{meta_path}: not valid JSON (line {e.lineno}: {e.msg})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ShapesCheckpointError(f"{meta_path}: field 'format' must be {FORMAT!r}")
        version = meta.get("format_version")
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise ShapesCheckpointError(f"{meta_path}: field 'format_version' is {version!r}; this irisbench "
                                        f"reads 1..{FORMAT_VERSION}")
        if not isinstance(meta.get("vocab"), dict):
            raise ShapesCheckpointError(f"{meta_path}: field 'vocab' is missing")
        vocab = ShapesVocab.from_json(meta["vocab"], str(meta_path))
        try:
            sampling = {**meta.get("sampling", {}), **overrides}
            defaults = SamplingDefaults(**sampling)
            defaults.check()
        except (TypeError, ValueError) as e:
            raise ShapesCheckpointError(f"{meta_path}: field 'sampling' (or an override): {e}") from None

        config_path = path / "config.json"
        try:
            config = json.loads(config_path.read_text())
        except json.JSONDecodeError as e:
            raise ShapesCheckpointError(f"{config_path}: not valid JSON (line {e.lineno}: {e.msg})") from None
        if config.get("model_type") != "llama":
            raise ShapesCheckpointError(f"{config_path}: field 'model_type' is {config.get('model_type')!r}, "
                                        "expected 'llama'")
        if config.get("vocab_size") != vocab.size:
            raise ShapesCheckpointError(f"{config_path}: field 'vocab_size' is {config.get('vocab_size')}, "
                                        f"but {POLICY_FILE} describes {vocab.size} tokens")
        weights = path / "model.safetensors"
        try:
            with safe_open(str(weights), framework="pt") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        except Exception as e:  # safetensors raises its own error types on corrupt headers
            raise ShapesCheckpointError(f"{weights}: not a readable safetensors file ({e})") from None
        hidden = config.get("hidden_size")
        for key in ("model.embed_tokens.weight", "lm_head.weight"):
            if key not in shapes:
                raise ShapesCheckpointError(f"{weights}: tensor {key!r} is missing")
            if shapes[key] != (vocab.size, hidden):
                raise ShapesCheckpointError(f"{weights}: tensor {key!r} has shape {list(shapes[key])}, "
                                            f"expected [{vocab.size}, {hidden}] (vocabulary x hidden_size)")
        tok_path = path / TOKENIZER_FILE
        tokenizer = PatchTokenizer.load(tok_path)
        if tokenizer.codebook_size != vocab.codebook_size:
            raise ShapesCheckpointError(f"{tok_path}: {tokenizer.codebook_size} codes, but {POLICY_FILE} "
                                        f"field 'vocab.codebook_size' is {vocab.codebook_size}")
        if meta.get("num_image_tokens") != tokenizer.num_tokens:
            raise ShapesCheckpointError(f"{meta_path}: field 'num_image_tokens' is "
                                        f"{meta.get('num_image_tokens')}, the image tokenizer makes "
                                        f"{tokenizer.num_tokens}")
        from irisbench.core.devices import resolve_device

        model = _load_llama(path).to(resolve_device(device or os.environ.get("IRISBENCH_DEVICE") or "cpu"))
        return cls(model, vocab, tokenizer, defaults, checkpoint=str(path))

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ prompts
    def encode_prompts(self, prompts: Sequence[str]) -> list[list[int]]:
        """Word ids per prompt; raises ``UnknownTokensError`` listing out-of-vocabulary words."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not one string")
        return [self.vocab.encode_prompt(p) for p in prompts]

    def check_prompts(self, prompts: Sequence[str]) -> None:
        self.encode_prompts(prompts)

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        prompts: Sequence[str],
        n: int = 1,
        seed: int | Sequence[int] = 0,
        *,
        cfg: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        batch_size: int | None = None,
    ) -> Rollout:
        """Draw ``n`` samples per prompt (rows prompt-major); see ``generate`` for every option.

        ``temperature`` and ``top_k`` shape both the plan and the image draws; ``cfg`` only the image
        (``cfg=1`` skips the unconditional rows, ``cfg=0`` samples the unconditional model).
        """
        return self.generate(prompts, n, seed, cfg=cfg, temperature=temperature, top_k=top_k,
                             batch_size=batch_size)

    def generate(
        self,
        prompts: Sequence[str],
        n: int = 1,
        seed: int | Sequence[int] = 0,
        *,
        cfg: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        batch_size: int | None = None,
        stats_source: str | None = None,
        max_plan_tokens: int | None = None,
        use_cache: bool = True,
        record_stats: bool = True,
        keep_logits: bool = False,
        fast: bool | Callable[..., dict[str, Any]] = True,
        continue_plan: bool = False,
    ) -> Rollout:
        """``sample`` with the switches tests and benchmarks need.

        ``fast=True`` (default, with ``use_cache``) runs the fast loop of ``irisbench.policies.shapes_decode``
        (the reference loop's arithmetic without its overheads: same tokens, same logits on the CPU
        measured); ``fast=False`` the reference loop, the transformers forward with a ``DynamicCache``, which
        defines the numbers; a callable with ``generate_chunk_fast``'s signature runs in its place (benchmarks
        pass their baseline loops so). ``continue_plan=True`` (fast loops only) starts the image from the plan's
        cache instead of re-prefilling it: faster, but tokens may differ from the reference loop's (float round-off).
        ``use_cache=False`` recomputes the whole prefix at every step (the naive baseline);
        ``record_stats=False`` skips logp/self-certainty/entropy (left as NaN); ``keep_logits=True``
        stores each step's restricted conditional (and guided) logits in ``extras["logits"]`` (the fast loops
        leave NaN in the plan logits of rows whose plan has ended: they no longer compute them).
        """
        import torch

        check_sampling_args(n, cfg, temperature, top_k)
        d = self.defaults
        s = replace(d, cfg=d.cfg if cfg is None else float(cfg),
                    temperature=d.temperature if temperature is None else float(temperature),
                    top_k=d.top_k if top_k is None else int(top_k),
                    stats_source=d.stats_source if stats_source is None else stats_source,
                    max_plan_tokens=d.max_plan_tokens if max_plan_tokens is None else max_plan_tokens,
                    batch_size=d.batch_size if batch_size is None else batch_size)
        s.check()
        prompt_ids = self.encode_prompts(prompts)
        seeds = row_seeds(len(prompts), n, seed)
        rows = [i for i in range(len(prompts)) for _ in range(n)]
        chunks = []
        from irisbench.policies.shapes_decode import generate_chunk_fast, supports_fast_decode
        from irisbench.policies.shapes_decode_reference import generate_chunk_reference

        if fast not in (True, False) and not callable(fast):
            raise UsageError(f"fast must be True, False or a chunk loop, got {fast!r}")
        loop = fast if callable(fast) else generate_chunk_fast
        fast = bool(fast) and use_cache and supports_fast_decode(self.model) and not torch.is_autocast_enabled(
            self.device.type)
        with torch.inference_mode():
            for start in range(0, len(rows), s.batch_size):
                sel = rows[start:start + s.batch_size]
                chunk_ids, chunk_seeds = [prompt_ids[i] for i in sel], seeds[start:start + len(sel)]
                if fast:
                    chunks.append(loop(self, chunk_ids, chunk_seeds, s, record_stats=record_stats,
                                       keep_logits=keep_logits, continue_plan=continue_plan))
                else:
                    chunks.append(generate_chunk_reference(self, chunk_ids, chunk_seeds, s, use_cache=use_cache,
                                                           record_stats=record_stats, keep_logits=keep_logits))
        return self._assemble(prompts, rows, prompt_ids, seeds, chunks, s, keep_logits)

    def _assemble(self, prompts: Sequence[str], rows: list[int], prompt_ids: list[list[int]],
                  seeds: list[int], chunks: list[dict[str, Any]], s: SamplingDefaults,
                  keep_logits: bool) -> Rollout:
        v, n_img = self.vocab, self.num_image_tokens
        plan_lens = [int(x) for c in chunks for x in c["plan_len"]]
        n_rows = len(rows)
        width = (max(plan_lens) if plan_lens else 0) + n_img
        tokens = np.full((n_rows, width), v.pad, dtype=np.int64)
        local = np.full((n_rows, width), -1, dtype=np.int64)
        token_mask = np.zeros((n_rows, width), dtype=bool)
        modality = np.full((n_rows, width), TEXT, dtype=np.int8)
        arrays = {k: np.zeros((n_rows, width), dtype=np.float32) for k in ("logp", "sc", "entropy")}
        all_codes, plans_text, truncated = [], [], []
        r = 0
        for c in chunks:
            for i in range(len(c["plans"])):
                pl = plan_lens[r]
                tokens[r, :pl] = c["plans"][i]
                local[r, :pl] = c["plan_local"][i, :pl].numpy()
                tokens[r, pl:pl + n_img] = c["codes"][i].numpy() + v.image_offset
                local[r, pl:pl + n_img] = c["codes"][i].numpy()
                token_mask[r, :pl + n_img] = True
                modality[r, pl:pl + n_img] = IMAGE
                for k in arrays:
                    arrays[k][r, :pl + n_img] = c["stats"][k][i, :pl + n_img].numpy()
                plans_text.append(v.decode_words(c["plans"][i]))
                truncated.append(bool(c["truncated"][i]))
                r += 1
            all_codes.append(c["codes"].numpy())
        codes = np.concatenate(all_codes) if all_codes else np.zeros((0, n_img), dtype=np.int64)
        images = list(self.image_tokenizer.decode(codes)) if len(codes) else []
        settings = {"policy": self.name, "cfg": s.cfg, "temperature": s.temperature, "top_k": s.top_k,
                    "stats_source": s.stats_source, "max_plan_tokens": s.max_plan_tokens,
                    "vocab_size": self.vocab_sizes,
                    "self_certainty": "logsumexp(z) - mean(z) over the allowed sub-vocabulary (+log|V| kept)",
                    "stats_logits": "raw (temperature 1, no top-k)"}
        forced = np.zeros((n_rows, width), dtype=bool)  # the EOP the plan cap inserted (last plan token)
        for r, cut in enumerate(truncated):
            if cut:
                forced[r, plan_lens[r] - 1] = True
        extras: dict[str, Any] = {"prompt_ids": [prompt_ids[i] for i in rows], "local_tokens": local,
                                  "image_codes": codes, "plan_truncated": np.array(truncated, dtype=bool)}
        if keep_logits:
            extras["logits"] = [c["kept"] for c in chunks]
        return Rollout(prompts=[prompts[i] for i in rows], seeds=list(seeds), images=images,
                       plans=plans_text, tokens=tokens, token_mask=token_mask, modality=modality,
                       logp=arrays["logp"], self_certainty=arrays["sc"], entropy=arrays["entropy"],
                       settings=settings, extras=extras, forced=forced)

    # ------------------------------------------------------------------ teacher forcing (GRPO)
    def token_logits(self, rollout: Rollout, *, uncond: bool = False) -> TokenLogits:
        """Teacher-forced conditional statistics of ``rollout``'s tokens (differentiable, no CFG), on the
        model's device.

        ``tokens`` are local indices into the plan vocabulary (plan words + EOP) at TEXT positions and codebook
        ids at IMAGE positions. ``parts`` holds ``text_logits`` (B, T, Vt) and ``image_logits`` (B, T, Vi), each
        valid where ``modality`` is TEXT / IMAGE and ``mask``. ``uncond=True`` fills ``image_logits`` and
        ``image_logits_uncond`` (from ``[BOS] [NULL] [BOI] codes``) for guided log-probs.
        """
        import torch

        from irisbench.core.uncertainty import token_stats

        v = self.vocab
        prompt_ids = rollout.extras.get("prompt_ids")
        if prompt_ids is None or len(prompt_ids) != len(rollout):
            raise ValueError("rollout.extras['prompt_ids'] is missing or has the wrong length: token_logits "
                             "needs a rollout made by ShapesLMPolicy.sample")
        dev = self.device
        tokens = torch.as_tensor(rollout.tokens, dtype=torch.long)
        tmask = torch.as_tensor(rollout.token_mask, dtype=torch.bool)
        modality = torch.as_tensor(rollout.modality, dtype=torch.long)
        is_text, is_img = tmask & (modality == TEXT), tmask & (modality == IMAGE)
        b, width = tokens.shape
        seqs, gather = [], torch.zeros((b, width), dtype=torch.long)
        for r in range(b):
            plan = tokens[r][is_text[r]].tolist()
            img = tokens[r][is_img[r]].tolist()
            if len(img) != self.num_image_tokens or not tmask[r, : len(plan) + len(img)].all():
                raise ValueError(f"rollout row {r}: expected a plan then {self.num_image_tokens} image "
                                 "tokens, left-aligned")
            prefix = 1 + len(prompt_ids[r]) + 1
            seqs.append([v.bos, *prompt_ids[r], v.bop, *plan, v.boi, *img])
            # token t of the row is predicted at position prefix - 1 + t (plan), prefix + t (image)
            t = torch.arange(width)
            gather[r] = torch.where(t < len(plan), prefix - 1 + t, prefix + t).clamp(max=len(seqs[-1]) - 1)
        local = torch.as_tensor(rollout.extras.get("local_tokens"), dtype=torch.long) \
            if "local_tokens" in rollout.extras else self._local_tokens(tokens, is_text, is_img)
        ids, mask = _right_pad(seqs, v.pad)
        gather, local, tmask, modality = (x.to(dev) for x in (gather, local, tmask, modality))
        is_text, is_img = is_text.to(dev), is_img.to(dev)
        logits = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits.float()
        picked = logits.gather(1, gather.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
        text_ids = torch.as_tensor(v.text_ids, device=dev)
        lo, hi = v.image_offset, v.image_offset + v.codebook_size
        text_logits, image_logits = picked[..., text_ids], picked[..., lo:hi]
        safe = local.clamp(min=0)
        t_lp, t_sc, t_ent = token_stats(text_logits, safe.clamp(max=len(v.text_ids) - 1))
        i_lp, i_sc, i_ent = token_stats(image_logits, safe.clamp(max=v.codebook_size - 1))
        zero = torch.zeros((), dtype=torch.float32, device=dev)

        def pick(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return torch.where(is_text, a, torch.where(is_img, c, zero))

        out = TokenLogits(logp=pick(t_lp, i_lp), self_certainty=pick(t_sc, i_sc), entropy=pick(t_ent, i_ent),
                          mask=tmask, modality=modality, tokens=local,
                          parts={"text_logits": text_logits, "image_logits": image_logits})
        if uncond:
            useqs = [[v.bos, v.null, v.boi, *tokens[r][is_img[r].cpu()].tolist()] for r in range(b)]
            uids, _ = _right_pad(useqs, v.pad)
            ulog = self.model(input_ids=uids.to(dev)).logits.float()[:, 2:-1, lo:hi]  # predicts image tokens 0..63
            img_start = is_text.sum(1)
            idx = (torch.arange(width, device=dev).unsqueeze(0) - img_start.unsqueeze(1))
            idx = idx.clamp(0, self.num_image_tokens - 1)
            out.image_logits = image_logits
            out.image_logits_uncond = ulog.gather(1, idx.unsqueeze(-1).expand(-1, -1, ulog.shape[-1]))
        return out

    def _local_tokens(self, tokens: torch.Tensor, is_text: torch.Tensor,
                      is_img: torch.Tensor) -> torch.Tensor:
        import torch

        v = self.vocab
        lookup = torch.full((v.size,), -1, dtype=torch.long, device=tokens.device)
        lookup[torch.as_tensor(v.text_ids, device=tokens.device)] = torch.arange(len(v.text_ids), device=tokens.device)
        local = torch.where(is_text, lookup[tokens], torch.full_like(tokens, -1))
        return torch.where(is_img, tokens - v.image_offset, local)

    def freeze_image_tokens(self) -> None:
        """Keep the image codes' output rows (``lm_head``) and input embeddings fixed, as the released IRIS recipe
        keeps Janus's separate image head and image embeddings: their gradient rows are zeroed in backward, so
        AdamW (without weight decay) never moves them. The plan vocabulary and the body still train."""
        import torch

        v = self.vocab
        rows = torch.arange(v.image_offset, v.image_offset + v.codebook_size)

        def zero_image_rows(grad: torch.Tensor) -> torch.Tensor:
            return grad.index_fill(0, rows.to(grad.device), 0.0)

        for weight in (self.model.lm_head.weight, self.model.model.embed_tokens.weight):
            weight.register_hook(zero_image_rows)

    def fsdp_units(self) -> list[Any]:
        """Disjoint FSDP units holding every parameter (irisbench.train.sharding): blocks, embeddings, norm, head."""
        inner = self.model.model
        return [*inner.layers, inner.embed_tokens, inner.norm, self.model.lm_head]

    # ------------------------------------------------------------------ provenance
    def num_parameters(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))

    def describe(self) -> dict[str, Any]:
        c = self.model.config
        return {"name": self.name, "world": self.world, "render_world": self.image_tokenizer.world,
                "checkpoint": self.checkpoint,
                "parameters": self.num_parameters(),
                "model": {"type": "llama", "hidden_size": c.hidden_size, "num_layers": c.num_hidden_layers,
                          "num_heads": c.num_attention_heads, "intermediate_size": c.intermediate_size,
                          "vocab_size": c.vocab_size},
                "vocab_size": self.vocab_sizes,
                "num_image_tokens": self.num_image_tokens, "sampling": asdict(self.defaults)}


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No "Loading weights" / "Writing model shards" progress bars for a 39-tensor model."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _load_llama(path: Path) -> Any:
    from transformers import LlamaForCausalLM

    try:
        with _quiet_transformers():
            model, info = LlamaForCausalLM.from_pretrained(
                str(path), use_safetensors=True, local_files_only=True, attn_implementation="eager",
                output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise ShapesCheckpointError(f"{path}: transformers could not load the model ({e})") from None
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        raise ShapesCheckpointError(f"{path / 'model.safetensors'}: weights do not match config.json: {bad}")
    return model.float().eval()


def load_shipped_base(*, device: str | None = None, **overrides: Any) -> ShapesLMPolicy:
    """The base checkpoint shipped in ``irisbench/assets/shapes-base`` (see its README.md)."""
    return ShapesLMPolicy.load(SHIPPED_BASE, device=device, **overrides)


def load_textures_base(*, device: str | None = None, **overrides: Any) -> ShapesLMPolicy:
    """The textures-world base shipped in ``irisbench/assets/textures-base`` (see its README.md)."""
    return ShapesLMPolicy.load(SHIPPED_TEXTURES_BASE, device=device, **overrides)


__all__ = ["FORMAT", "FORMAT_VERSION", "SHIPPED_BASE", "SHIPPED_BASES", "SHIPPED_TEXTURES_BASE", "SamplingDefaults",
           "ShapesCheckpointError", "ShapesLMPolicy", "ShapesVocab", "UnknownTokensError", "build_model",
           "load_shipped_base", "load_textures_base"]
