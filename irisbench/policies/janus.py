"""Janus-Pro (transformers' ``JanusForConditionalGeneration``) as an irisbench policy.

One rollout row = an optional semantic chain of thought (CoT, text tokens drawn from ``lm_head``),
then 576 image tokens drawn with classifier-free guidance (CFG) from ``generation_head``, decoded by
the VQ model. The sampling loops are the project's own (``janus_decode``, with their departures from the
official code); checkpoint folders are checked by ``janus_checkpoint``. ``token_logits`` recomputes the
conditional logits teacher-forced and differentiably for GRPO (``janus_logits``).

Prompt format, as found in the official code (deepseek-ai/Janus ``conversation.py``, template
"deepseek", and ``apply_sft_template_for_multi_turn_prompts``; the same string is produced by the
chat template that transformers' ``convert_janus_weights_to_hf.py`` ships):

- ``[system + "\\n\\n"]<|User|>: {content.strip()}\\n\\n<|Assistant|>:`` — roles ``<|User|>`` and
  ``<|Assistant|>``, one space after ``<|User|>:``, none after ``<|Assistant|>:``; the whole string is
  stripped; BOS first (the official tokenizer adds it; ``JanusPolicy.encode`` prepends it explicitly).
  No system prompt for image generation.
- image generation appends ``<begin_of_image>`` right after ``<|Assistant|>:`` (no space).
- CoT (T2I-R1 / IRIS ``grpo_trainer_ir.py`` and ``reason_inference.py``): system prompt
  ``COT_SYSTEM_PROMPT``, user content ``COT_PROMPT.format(prompt)``; the CoT is decoded with
  ``skip_special_tokens=True`` and the image prompt becomes ``f"{prompt}. {cot}"`` in the same template
  (no system prompt). ``COT_PROMPT`` is T2I-R1's ``reasoning_prompt.txt`` as quoted verbatim by
  VLMEvalKit's T2I-R1 wrapper (the file itself is not in the public index searched here).

Self-certainty vocabulary (``vocab_sizes``, recorded as ``Rollout.settings["vocab_size"]``): the CoT tokens' SC is
taken over ``lm_head``'s whole text vocabulary (k_text = 102,400) and the image tokens' over ``generation_head``'s
codebook (k_image = 16,384), as in the IRIS code, so the kept offsets are log 102,400 > log 16,384 (the shapes LM's
order is the opposite; docs/self-certainty.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from irisbench.core.errors import UsageError
from irisbench.policies.base import STATS_SOURCES, Rollout, TokenLogits, check_sampling_args, row_seeds
from irisbench.policies.janus_checkpoint import JanusCheckpointError, check_expected_config, resolve_checkpoint
from irisbench.policies.janus_decode import (
    LoopOutput,
    _check_decode,
    _lay_out_tokens,
    sample_image_tokens,
    sample_text,
    tokens_to_pixels,
)
from irisbench.policies.janus_logits import image_logits, per_token, text_logits, training_mode

if TYPE_CHECKING:  # heavy imports stay out of module import
    import torch

USER_ROLE = "<|User|>"
ASSISTANT_ROLE = "<|Assistant|>"
COT_SYSTEM_PROMPT = (
    "You are a helpful assistant that receives an image prompt and generate a visualization of the prompt."
)
COT_PROMPT = (
    'You are asked to generate an image based on this prompt: "{}"\n'
    "Provide a brief, precise visualization of all elements in the prompt. Your description should:\n"
    "1. Include every object mentioned in the prompt\n"
    "2. Specify visual attributes (color, number, shape, texture) if specified in the prompt\n"
    "3. Clarify relationships (e.g., spatial) between objects if specified in the prompt\n"
    "4. Be concise (50 words or less)\n"
    "5. Focus only on what's explicitly stated in the prompt\n"
    "6. Do not elaborate beyond the attributes or relationships specified in the prompt\n"
    "Do not miss objects. Output your visualization directly without explanation: "
)
DEFAULT_COT_MAX_NEW_TOKENS = 512  # T2I-R1 / IRIS inference; their training used up to 1024
# T2I-R1 freezes names starting with vision_model / aligner / gen (gen_vision_model, gen_aligner, gen_head,
# gen_embed); in transformers' names those are:
RL_FROZEN_PATTERNS = ("vision_model", "aligner", "vqmodel", "generation_")


# ----------------------------------------------------------------------------------------- prompts


def chat_prompt(content: str, system_prompt: str = "") -> str:
    """One user turn in Janus-Pro's "deepseek" format, ending with ``<|Assistant|>:``."""
    head = f"{system_prompt}\n\n" if system_prompt else ""
    return f"{head}{USER_ROLE}: {content.strip()}\n\n{ASSISTANT_ROLE}:".strip()


def cot_request(prompt: str) -> str:
    """The semantic-CoT request (T2I-R1's reasoning prompt with its system prompt)."""
    return chat_prompt(COT_PROMPT.format(prompt), COT_SYSTEM_PROMPT)


def image_request(prompt: str, cot: str | None = None) -> str:
    """The image-generation prompt (without ``<begin_of_image>``): ``prompt`` or ``f"{prompt}. {cot}"``."""
    return chat_prompt(prompt if cot is None else f"{prompt}. {cot}")


def _dtype(dtype: Any, device: str) -> torch.dtype:
    import torch

    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        name = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(dtype, dtype)
        value = getattr(torch, name, None)
        if not isinstance(value, torch.dtype):
            raise UsageError(f"dtype: unknown torch dtype {dtype!r}")
        return value
    return dtype


def freeze_for_rl(model: Any) -> int:
    """Freeze what IRIS / T2I-R1 keep frozen; return the number of trainable parameters.

    Frozen (parameter names containing one of ``RL_FROZEN_PATTERNS``, usable as the trainer's ``freeze``
    setting): the understanding vision tower and its aligner, the VQ model, the image-token embeddings, the
    generation aligner and the image head. Trainable: the language model and ``lm_head``.
    """
    for name, param in model.named_parameters():
        if any(pattern in name for pattern in RL_FROZEN_PATTERNS):
            param.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------- policy


class JanusPolicy:
    """Janus-Pro through transformers: semantic CoT, then CFG image tokens; see the module docstring."""

    name = "janus-pro"
    world = "open"
    lora_scope = "model.language_model."  # LoRA (irisbench.policies.lora) in the language model only

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        checkpoint: str = "",
        cot: bool = True,
        cfg: float = 5.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        cot_max_new_tokens: int = DEFAULT_COT_MAX_NEW_TOKENS,
        cot_temperature: float = 1.0,
        cot_top_k: int | None = 50,
        stats_source: str = "conditional",
        batch_size: int = 16,
        logits_chunk: int = 0,
        gradient_checkpointing: bool = False,
        decode: str = "eager",
    ) -> None:
        check_sampling_args(1, cfg, temperature, top_k)
        check_sampling_args(1, None, cot_temperature, cot_top_k)
        if stats_source not in STATS_SOURCES:
            raise UsageError(f"stats_source must be one of {STATS_SOURCES}, got {stats_source!r}")
        if cot_max_new_tokens < 1:
            raise UsageError(f"cot_max_new_tokens must be >= 1, got {cot_max_new_tokens}")
        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        if not isinstance(logits_chunk, int) or isinstance(logits_chunk, bool) or logits_chunk < 0:
            raise UsageError(f"logits_chunk must be an integer >= 0 (0: whole logits), got {logits_chunk!r}")
        _check_decode(decode)
        self.decode = decode  # sampling loops: eager, static (fixed-shape step) or compiled (CUDA graphs)
        self.model = model
        # GRPO memory (token_logits): per-token statistics from chunks of positions, and activation
        # checkpointing of the language model's decoder blocks (recomputed in backward)
        self.logits_chunk = logits_chunk
        self.gradient_checkpointing = bool(gradient_checkpointing)
        if self.gradient_checkpointing:
            model.model.language_model.activation_checkpointing_enable(  # transformers 5.23's name
                activation_checkpointing_kwargs={"use_reentrant": False})
        self.processor = processor
        self.tokenizer = processor.tokenizer if hasattr(processor, "tokenizer") else processor
        self.checkpoint = checkpoint
        self.cot, self.cfg, self.temperature, self.top_k = cot, float(cfg), float(temperature), top_k
        self.cot_max_new_tokens, self.cot_temperature, self.cot_top_k = cot_max_new_tokens, cot_temperature, cot_top_k
        self.stats_source, self.batch_size = stats_source, batch_size
        gen = model.generation_config
        tok = self.tokenizer
        self.bos_id = _first_int(getattr(gen, "bos_token_id", None), tok.bos_token_id, "bos_token_id")
        self.pad_id = _first_int(getattr(gen, "pad_token_id", None), tok.pad_token_id, "pad_token_id")
        self.eos_id = _first_int(tok.eos_token_id, getattr(gen, "eos_token_id", None), "eos_token_id")
        boi = getattr(tok, "boi_token", None) or "<begin_of_image>"
        boi_id = tok.convert_tokens_to_ids(boi)
        if boi_id is None or boi_id == tok.unk_token_id:
            raise JanusCheckpointError(f"{checkpoint or 'tokenizer'}: tokenizer has no {boi!r} token")
        self.boi_id = int(boi_id)
        self.num_image_tokens = int(model.config.vision_config.num_image_tokens)
        grid = math.isqrt(self.num_image_tokens)
        if grid * grid != self.num_image_tokens:
            raise JanusCheckpointError(f"{checkpoint}: config.json vision_config.num_image_tokens "
                                       f"{self.num_image_tokens} is not a square grid")

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str | Path,
        *,
        device: str | None = None,
        dtype: Any = None,
        cot: bool = True,
        cfg: float = 5.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        cot_max_new_tokens: int = DEFAULT_COT_MAX_NEW_TOKENS,
        stats_source: str = "conditional",
        **kwargs: Any,
    ) -> JanusPolicy:
        """Load a transformers-format Janus folder (safetensors only, no remote code).

        ``device`` defaults to CUDA when available (``irisbench.core.devices.resolve_device``); ``dtype`` to bf16
        on CUDA and fp32 on the CPU (bf16 on a CPU without native bf16 instructions is refused).
        Extra keyword arguments (``cot_temperature``, ``cot_top_k``, ``batch_size``, ``logits_chunk``,
        ``gradient_checkpointing``, ``decode``) go to the constructor; ``expect`` (a mapping of
        ``text_config`` fields and ``dtype``) refuses a folder that does not match (``check_expected_config``).
        """
        from transformers import JanusForConditionalGeneration, JanusProcessor

        from irisbench.core.devices import check_dtype, resolve_device

        expect = kwargs.pop("expect", None)
        path = resolve_checkpoint(model_id_or_path)
        if expect:
            check_expected_config(path, expect)
        device = resolve_device(device)  # one clear line for cuda without a GPU, cuda:7 on a 1-GPU host
        torch_dtype = _dtype(dtype, device)
        check_dtype(torch_dtype, device, flag="dtype")  # bf16 weights on a CPU without bf16 instructions
        model = JanusForConditionalGeneration.from_pretrained(
            path, dtype=torch_dtype, use_safetensors=True, trust_remote_code=False
        )
        model = model.to(device).eval()
        processor = JanusProcessor.from_pretrained(path, trust_remote_code=False)
        return cls(model, processor, checkpoint=str(path), cot=cot, cfg=cfg, temperature=temperature,
                   top_k=top_k, cot_max_new_tokens=cot_max_new_tokens, stats_source=stats_source, **kwargs)

    # -------------------------------------------------------------------------------- helpers

    @property
    def device(self) -> Any:
        return self.model.lm_head.weight.device

    @property
    def vocab_sizes(self) -> dict[str, int]:
        """Text vocabulary (``text_config.vocab_size``: 102,400 in Janus-Pro) and image codebook
        (``vq_config.num_embeddings``: 16,384), from the checkpoint's config."""
        cfg = self.model.config
        return {"text": int(cfg.text_config.vocab_size), "image": int(cfg.vq_config.num_embeddings)}

    @property
    def max_completion_length(self) -> int:
        """The widest rollout row: the CoT cap (when the CoT is on) plus the image tokens."""
        return (self.cot_max_new_tokens if self.cot else 0) + self.num_image_tokens

    def encode(self, text: str) -> list[int]:
        """Token ids of a formatted prompt with BOS prepended (the tokenizer's own BOS rule not used)."""
        return [self.bos_id] + list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _generators(self, seeds: Sequence[int]) -> list[torch.Generator]:
        import torch

        gens = []
        for s in seeds:
            g = torch.Generator(device=self.device)
            g.manual_seed(int(s) & 0xFFFF_FFFF_FFFF_FFFF)
            gens.append(g)
        return gens

    # --------------------------------------------------------------------------------- sample

    def sample(
        self,
        prompts: Sequence[str],
        n: int = 1,
        seed: int | Sequence[int] = 0,
        *,
        cfg: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
    ) -> Rollout:
        """Draw ``n`` rollouts per prompt: CoT (if enabled), image tokens with CFG, decoded images."""
        if isinstance(prompts, str) or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise UsageError("prompts must be a sequence of non-empty strings")
        check_sampling_args(n, cfg, temperature, top_k)
        cfg = self.cfg if cfg is None else float(cfg)
        temperature = self.temperature if temperature is None else float(temperature)
        top_k = self.top_k if top_k is None else top_k
        seeds = row_seeds(len(prompts), n, seed)
        rows = [p for p in prompts for _ in range(n)]
        parts: list[tuple[LoopOutput | None, LoopOutput]] = []
        images: list[np.ndarray] = []
        plans: list[str] = []
        cot_ids: list[list[int]] = []
        img_ids: list[list[int]] = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            gens = self._generators(seeds[start:start + self.batch_size])
            cots: list[str | None] = [None] * len(chunk)
            text = None
            if self.cot:
                req = [self.encode(cot_request(p)) for p in chunk]
                text = sample_text(self.model, req, gens, max_new_tokens=self.cot_max_new_tokens,
                                   eos_id=self.eos_id, pad_id=self.pad_id, temperature=self.cot_temperature,
                                   top_k=self.cot_top_k, decode=self.decode)
                cots = [self.tokenizer.decode(text.tokens[r][text.mask[r]].tolist(), skip_special_tokens=True)
                        for r in range(len(chunk))]
                cot_ids.extend(req)
            else:
                cot_ids.extend([] for _ in chunk)
            req = [self.encode(image_request(p, c)) + [self.boi_id] for p, c in zip(chunk, cots, strict=True)]
            image = sample_image_tokens(self.model, req, gens, num_tokens=self.num_image_tokens, cfg=cfg,
                                        bos_id=self.bos_id, boi_id=self.boi_id, pad_id=self.pad_id,
                                        temperature=temperature, top_k=top_k, stats_source=self.stats_source,
                                        decode=self.decode)
            img_ids.extend(req)
            parts.append((text, image))
            images.extend(self.decode_pixels(image.tokens))
            plans.extend((c or "").strip() for c in cots)
        rollout = Rollout(
            prompts=rows, seeds=seeds, images=images, plans=plans,
            settings={"policy": self.name, "cfg": cfg, "temperature": temperature, "top_k": top_k,
                      "stats_source": self.stats_source, "stats_temperature": 1.0, "cot": self.cot,
                      "cot_max_new_tokens": self.cot_max_new_tokens, "cot_temperature": self.cot_temperature,
                      "cot_top_k": self.cot_top_k, "vocab_size": self.vocab_sizes},
            extras={"cot_prompt_ids": cot_ids, "image_prompt_ids": img_ids, "num_image_tokens": self.num_image_tokens},
        )
        _lay_out_tokens(rollout, parts)
        return rollout

    def decode_pixels(self, tokens: torch.Tensor) -> list[np.ndarray]:
        """uint8 (H, W, 3) images of image tokens (B, N): the checkpoint's VQ decoder."""
        return tokens_to_pixels(self.model, tokens)

    # --------------------------------------------------------------------------- token_logits

    def token_logits(self, rollout: Rollout, *, uncond: bool = False) -> TokenLogits:
        """Teacher-forced, differentiable conditional-branch statistics of a rollout's tokens (the trainer's view).

        Aligned with ``rollout.tokens`` (B, T): ``tokens`` (text ids at TEXT positions, codebook ids at IMAGE
        positions), ``mask``, ``modality``, and ``logp``, ``self_certainty`` (raw ``logsumexp - mean``),
        ``entropy`` of the conditional logits (0 where masked). ``uncond=True`` adds ``image_logits`` and
        ``image_logits_uncond`` (B, T, V_image), the latter from the unconditional prompt (all but BOS/BOI
        padded, as the sampling loop), for CFG-guided log-probs. ``parts`` holds the rest of ``part_logits``'
        output (the whole per-part logits unless the policy's ``logits_chunk`` > 0).
        """
        out = self.part_logits(rollout, uncond=uncond)
        return TokenLogits(
            logp=out.pop("logp"), self_certainty=out.pop("self_certainty"), entropy=out.pop("entropy"),
            mask=out.pop("mask"), modality=out.pop("modality"), tokens=out.pop("tokens"),
            image_logits=out.pop("image_logits", None), image_logits_uncond=out.pop("image_logits_uncond", None),
            parts=out,
        )

    def part_logits(
        self, rollout: Rollout, *, uncond: bool = False, parts: Sequence[str] = ("text", "image"),
        logits: bool | None = None,
    ) -> dict[str, Any]:
        """Teacher-forced, differentiable conditional-branch logits of a rollout's tokens, per part.

        ``text`` (B, Lmax, V_text) from ``lm_head`` on the CoT request + CoT tokens and ``image``
        (B, N, V_image) from ``generation_head`` on the image prompt + image tokens, each with ``*_mask``
        (bool) and ``*_tokens`` (long) aligned to it (text token j of row r is ``text[r, j]``). The two parts
        are separate forward passes because the image prompt re-templates ``"{prompt}. {CoT}"`` (T2I-R1);
        ``parts`` picks what to compute (the text logits over 102,400 entries are the large ones).

        With both parts, also the trainer's per-token view, aligned with ``rollout.tokens`` (B, T): ``tokens``
        (text ids at TEXT positions, codebook ids at IMAGE positions), ``mask``, ``modality``, and ``logp``,
        ``self_certainty`` (raw ``logsumexp - mean``), ``entropy`` of the conditional logits (0 where
        masked). ``uncond=True`` adds ``image_logits`` and ``image_logits_uncond`` (B, T, V_image), the latter
        from the unconditional prompt (all but BOS/BOI padded, as the sampling loop), for CFG-guided log-probs.
        Logits are in the model dtype; gradients flow unless the caller disables them.

        ``logits=False`` (the default when the policy's ``logits_chunk`` > 0) returns the per-token view
        without the whole ``text``/``image`` logits: the statistics come from ``logits_chunk`` positions at a
        time (``irisbench.core.uncertainty.head_token_stats``), so the (B, L, 102400) fp32 logits never exist at
        once, in the forward or the backward pass; ``image`` logits are still returned with ``uncond=True``
        (CFG-guided log-probs need them). With ``gradient_checkpointing`` the decoder blocks are recomputed
        in backward.
        """
        import contextlib

        import torch

        if not parts or set(parts) - {"text", "image"}:
            raise ValueError(f"parts must be a non-empty subset of ('text', 'image'), got {tuple(parts)}")
        ex = rollout.extras
        try:
            cot_ids, img_ids = ex["cot_prompt_ids"], ex["image_prompt_ids"]
            lengths, n_img = ex["text_lengths"], ex["num_image_tokens"]
        except KeyError as err:
            raise ValueError(f"rollout.extras lacks {err.args[0]!r}: not a rollout of JanusPolicy.sample") from err
        full = self.logits_chunk == 0 if logits is None else bool(logits)
        if not full and len(set(parts)) != 2:
            raise ValueError("logits=False gives the per-token view only: ask for both parts")
        tokens = torch.as_tensor(rollout.tokens, dtype=torch.long)
        out: dict[str, Any] = {}
        lm = self.model.model.language_model
        # decoder-block checkpointing runs only in training mode (transformers' rule); dropout is 0 here
        ckpt = self.gradient_checkpointing and torch.is_grad_enabled() and not lm.training
        with training_mode(lm) if ckpt else contextlib.nullcontext():
            if "text" in parts:
                out.update(text_logits(self, tokens, cot_ids, lengths, head=full))
            if "image" in parts:
                out.update(image_logits(self, tokens, img_ids, lengths, n_img, head=full or uncond))
                if uncond:
                    keep = [[t if t in (self.bos_id, self.boi_id) else self.pad_id for t in row] for row in img_ids]
                    out["image_uncond"] = image_logits(self, tokens, keep, lengths, n_img)["image"]
        if len(set(parts)) == 2:
            out.update(per_token(self, rollout, out, lengths, n_img, uncond))
        for key in ("text_hidden", "image_hidden"):
            out.pop(key, None)
        if not full:
            out.pop("text", None)
            if not uncond:
                out.pop("image", None)
        return out

    def save(self, path: str | Path, state_dict: dict[str, Any] | None = None) -> Path:
        """Write a folder that ``from_pretrained`` loads back: model (safetensors), generation config,
        processor, and ``irisbench_policy.json`` (the policy name and its sampling settings).
        ``state_dict``: the weights to write instead of the model's own (whole weights of a sharded model)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, state_dict=state_dict)
        self.processor.save_pretrained(path)
        meta = {"policy": self.name, "format": "transformers-janus", "sampling": self.describe()["sampling"]}
        (path / "irisbench_policy.json").write_text(json.dumps(meta, indent=2) + "\n")
        return path

    def fsdp_units(self) -> list[Any]:
        """Disjoint FSDP units (irisbench.train.sharding): the decoder blocks, token embeddings, final norm and
        ``lm_head``, and the image-token embeddings, aligner and head; the understanding tower, its aligner
        and the VQ model (frozen, used only to decode) fall to the root unit."""
        import warnings

        # the image head returns a view; token_logits only reads it (no in-place op), which is what
        # FSDP's warning about views asks for
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPJanusVQVAEHead\) returned a view")
        lm, inner = self.model.model.language_model, self.model.model
        return [*lm.layers, lm.embed_tokens, lm.norm, self.model.lm_head, inner.generation_embeddings,
                inner.generation_aligner, inner.generation_head]

    # ------------------------------------------------------------------------------- describe

    def describe(self) -> dict[str, Any]:
        """Provenance: checkpoint, dtype/device, sizes, sampling defaults, prompt format."""
        import torch
        import transformers

        cfg = self.model.config
        params = sum(p.numel() for p in {id(p): p for p in self.model.parameters()}.values())
        return {
            "name": self.name,
            "world": self.world,
            "checkpoint": self.checkpoint,
            "class": type(self.model).__name__,
            "transformers": transformers.__version__,
            "torch": str(torch.__version__),  # TorchVersion: a str subclass yaml cannot write
            "device": str(self.device),
            "dtype": str(self.model.dtype).replace("torch.", ""),
            "parameters": int(params),
            "text_vocab": int(self.model.lm_head.out_features),
            "image_vocab": int(cfg.vq_config.num_embeddings),
            "num_image_tokens": self.num_image_tokens,
            "special_ids": {"bos": self.bos_id, "eos": self.eos_id, "pad": self.pad_id, "boi": self.boi_id},
            "sampling": {
                "cot": self.cot, "cfg": self.cfg, "temperature": self.temperature, "top_k": self.top_k,
                "cot_max_new_tokens": self.cot_max_new_tokens, "cot_temperature": self.cot_temperature,
                "cot_top_k": self.cot_top_k, "stats_source": self.stats_source, "batch_size": self.batch_size,
            },
            "template": {"image": image_request("{prompt}") + "<begin_of_image>", "cot": cot_request("{prompt}")},
            **({"compute": {"logits_chunk": self.logits_chunk, "gradient_checkpointing": self.gradient_checkpointing,
                            "decode": self.decode}}
               if self.logits_chunk or self.gradient_checkpointing or self.decode != "eager" else {}),
        }


def _first_int(a: Any, b: Any, what: str) -> int:
    for v in (a, b):
        if isinstance(v, (list, tuple)) and v:
            v = v[0]
        if isinstance(v, int):
            return v
    raise JanusCheckpointError(f"neither generation_config.json nor the tokenizer defines {what}")
