"""A tiny Janus-Pro for the shapes world: transformers' ``JanusForConditionalGeneration``, driven by ``JanusPolicy``.

``JanusShapesPolicy`` is ``JanusPolicy`` (the same CoT loop, the same CFG image loop, the same teacher-forced
``token_logits``) on a tiny Janus whose image tokens are the shapes world's patch codes: the model's image
codebook (``vq_config.num_embeddings``) is the world tokenizer's codebook, code ``k`` of ``generation_head`` is
world code ``k``, and the 8 x 8 image-token grid is the world's 8 x 8 patch grid. Images are decoded by the
world's lossless patch tokenizer (``image_tokenizer.safetensors`` in the folder), not by Janus's VQ decoder:
that decoder would have to be trained to reproduce the exact flat colours and shape edges the world's exact
detector judges, while the world tokenizer does it by table lookup. The VQ model stays in the folder (the
``JanusConfig`` requires one) as an untrained stub that is never called. docs/janus.md says more.

The text side is a word-level tokenizer (``tokenizers``' ``WordLevel``) over the words of Janus-Pro's chat and
CoT templates (``irisbench.policies.janus``), the world's prompts and its plan grammar, so the CoT request is
the real T2I-R1 reasoning prompt and the CoT the model writes is the world's plan (``irisbench.world.plan``).

Pretraining (``JanusShapesBatches``, run by ``irisbench.train.pretrain`` with ``arch: janus``) teacher-forces the
sequences ``JanusPolicy.sample`` produces, through ``JanusPolicy.part_logits``: the CoT request then the plan
and EOS (``lm_head``), and the image request ``"{prompt}. {plan}"`` + BOI then the 64 codes
(``generation_head``); with probability ``uncond_prob`` a row's image request is the CFG unconditional one
(every token but BOS and BOI replaced by PAD, as the sampling loop builds it). The loss is
``plan_weight`` x the token mean of ``-logp`` over plan and EOS plus ``1 - plan_weight`` x the token mean over
image codes (one token mean over both when ``plan_weight`` is None: the plan words are then ~4% of the
tokens and the CoT hardly learns to read the prompt, which sits ~115 template tokens before it).

Departure from Janus-Pro: 32 px images, 64 image tokens, a codebook fitted by counting (exact for this world)
instead of a learned 16,384-entry VQ; a word-level tokenizer instead of the 102,400-entry BPE.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from irisbench.core.errors import UsageError
from irisbench.policies.base import IMAGE, TEXT, Rollout
from irisbench.policies.janus import COT_PROMPT, COT_SYSTEM_PROMPT, JanusPolicy, cot_request, image_request
from irisbench.policies.janus_checkpoint import JanusCheckpointError

NAME = "janus-shapes"
IMAGE_TOKENIZER_FILE = "image_tokenizer.safetensors"
SHIPPED_JANUS_SHAPES = Path(__file__).resolve().parent.parent / "assets" / "janus-shapes"
SPECIAL_TOKENS = ["<bos>", "<eos>", "<pad>", "<unk>", "<image_placeholder>", "<begin_of_image>", "<end_of_image>",
                  "<|User|>", "<|Assistant|>"]
# sampling defaults written into the shipped folder (the shapes base samples with CFG 3 too)
DEFAULT_SAMPLING = {"cfg": 3.0, "temperature": 1.0, "top_k": None, "cot_max_new_tokens": 40,
                    "cot_temperature": 1.0, "cot_top_k": None}


# ----------------------------------------------------------------------------------------- tokenizer


def corpus_words() -> list[str]:
    """Every word the policy reads or writes: the templates', the prompts', the plan grammar's (sorted)."""
    from tokenizers.pre_tokenizers import Whitespace

    from irisbench.world.plan import PLAN_WORDS
    from irisbench.world.prompts import PROMPT_WORDS

    split = Whitespace()
    texts = [COT_SYSTEM_PROMPT, COT_PROMPT.format("x"), " ".join(PROMPT_WORDS), " ".join(PLAN_WORDS), ". , : ;"]
    words = {w for t in texts for w, _ in split.pre_tokenize_str(t)}
    return sorted(words - set(SPECIAL_TOKENS))


def build_tokenizer() -> Any:
    """A word-level ``PreTrainedTokenizerFast`` (specials, then ``corpus_words``) with Janus's image tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate([*SPECIAL_TOKENS, *corpus_words()])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        extra_special_tokens={"image_token": "<image_placeholder>", "boi_token": "<begin_of_image>",
                              "eoi_token": "<end_of_image>"},
    )


# ----------------------------------------------------------------------------------------- policy


class JanusShapesPolicy(JanusPolicy):
    """``JanusPolicy`` on a shapes-world Janus: images decoded by the world's patch tokenizer (module docstring)."""

    name = NAME
    world = "shapes"

    def __init__(self, model: Any, processor: Any, *, image_tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(model, processor, **kwargs)
        self.image_tokenizer = image_tokenizer
        codes = int(model.config.vq_config.num_embeddings)
        if codes != image_tokenizer.codebook_size:
            raise JanusCheckpointError(f"{self.checkpoint}: config.json vq_config.num_embeddings is {codes}, "
                                       f"{IMAGE_TOKENIZER_FILE} has {image_tokenizer.codebook_size} codes")
        from irisbench.world.vocab import GRID

        if self.num_image_tokens != GRID * GRID:
            raise JanusCheckpointError(f"{self.checkpoint}: config.json vision_config.num_image_tokens is "
                                       f"{self.num_image_tokens}, the shapes world has {GRID * GRID} patches")

    def decode_pixels(self, tokens: Any) -> list[np.ndarray]:
        """World pixels of image codes (B, 64): the patch tokenizer's exact table lookup."""
        return list(self.image_tokenizer.decode(np.asarray(tokens.cpu(), dtype=np.int64)))

    @classmethod
    def load(cls, path: str | Path = SHIPPED_JANUS_SHAPES, *, device: str | None = None, **overrides: Any
             ) -> JanusShapesPolicy:
        """A shapes-world Janus folder (``save`` output): its sampling defaults, then ``overrides``."""
        from irisbench.world.tokenizer import PatchTokenizer

        path = Path(path)
        tok_file = path / IMAGE_TOKENIZER_FILE
        if not tok_file.is_file():
            raise JanusCheckpointError(f"{path}: not a shapes-world Janus folder (no {IMAGE_TOKENIZER_FILE})")
        meta = path / "irisbench_policy.json"
        sampling = dict(DEFAULT_SAMPLING)
        if meta.is_file():
            from irisbench.core.errors import read_json

            saved = read_json(meta, JanusCheckpointError, "policy metadata").get("sampling", {})
            sampling.update({k: saved[k] for k in DEFAULT_SAMPLING if k in saved})
        sampling.setdefault("cot", True)
        options = {**sampling, **overrides}
        unknown = sorted(set(options) - _LOAD_OPTIONS)
        if unknown:
            raise UsageError(f"policy {NAME!r}: unknown option(s) {', '.join(unknown)}; valid: "
                             f"{', '.join(sorted(_LOAD_OPTIONS))}")
        return cls.from_pretrained(path, device=device, image_tokenizer=PatchTokenizer.load(tok_file), **options)

    def save(self, path: str | Path, state_dict: dict[str, Any] | None = None) -> Path:
        """``JanusPolicy.save`` plus the world tokenizer; ``irisbench_policy.json`` names this policy."""
        path = super().save(path, state_dict)
        self.image_tokenizer.save(path / IMAGE_TOKENIZER_FILE)
        meta = json.loads((path / "irisbench_policy.json").read_text())
        meta["world"] = self.world
        meta["image_decoder"] = f"world patch tokenizer ({IMAGE_TOKENIZER_FILE}); the VQ model is an unused stub"
        (path / "irisbench_policy.json").write_text(json.dumps(meta, indent=2) + "\n")
        return path

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "image_decoder": "world patch tokenizer",
                "image_codebook": int(self.image_tokenizer.codebook_size)}


_LOAD_OPTIONS = {"cot", "cfg", "temperature", "top_k", "cot_max_new_tokens", "cot_temperature", "cot_top_k",
                 "stats_source", "batch_size", "logits_chunk", "gradient_checkpointing", "decode", "dtype", "expect"}


def load_janus_shapes(model: str | Path | None = None, *, device: str | None = None, **overrides: Any
                      ) -> JanusShapesPolicy:
    """``--policy janus-shapes``: the shipped folder, or ``--model FOLDER`` (a pretraining or training checkpoint)."""
    return JanusShapesPolicy.load(model or SHIPPED_JANUS_SHAPES, device=device, **overrides)


def init_image_path(model: Any) -> None:
    """Start the image-token path of a from-scratch Janus as a plain embedding table and a one-layer head.

    transformers initialises every ``Linear`` at N(0, 0.02), which is right for a one-layer map but not for
    Janus's two-layer image modules when nothing is pretrained: the aligner (``fc1``, GELU, ``hidden_layers``)
    shrinks a code's embedding ~40x (image embeddings of RMS 5e-4 against the text embeddings' 0.02), and the
    head (``proj_out``, GELU, ``vision_head``) gives logits ~10x smaller than ``lm_head``'s, each a product of
    small random maps that training grows one direction at a time. Pretrained that way (the 700-step recipe),
    the image-code embeddings collapse to ~4 directions, a shape's patches do not keep one colour, and the
    image loss stays at 0.51 where the shapes LM reaches 0.14. Here ``fc1`` and ``proj_out`` start as the
    identity and each further aligner layer as twice the identity (GELU's slope at 0 is 1/2), so a code's
    embedding reaches the language model unchanged (to first order) and the head starts one linear map
    (``vision_head``) after a GELU of the hidden state, as the shapes LM's ``lm_head``. Needs
    ``embed_dim == projection_dim == image_token_embed_dim`` (``create``'s config).
    """
    import torch

    aligner, head = model.model.generation_aligner, model.model.generation_head
    with torch.no_grad():
        for layer, gain in [(aligner.fc1, 1.0), *((h, 2.0) for h in aligner.hidden_layers), (head.proj_out, 1.0)]:
            rows, cols = layer.weight.shape
            if rows != cols:
                raise ValueError(f"init_image_path needs square image-path layers, got {rows} x {cols}")
            layer.weight.copy_(gain * torch.eye(rows, dtype=layer.weight.dtype))
            layer.bias.zero_()


def create(image_tokenizer: Any, *, hidden_size: int = 128, num_layers: int = 2, num_heads: int = 4,
           intermediate_size: int = 256, seed: int = 0) -> JanusShapesPolicy:
    """A freshly initialised shapes-world Janus (fp32, CPU) with the world's codebook and 8 x 8 token grid."""
    import torch
    from transformers import (
        GenerationConfig,
        JanusConfig,
        JanusForConditionalGeneration,
        JanusImageProcessor,
        JanusProcessor,
        JanusVisionConfig,
        JanusVQVAEConfig,
        LlamaConfig,
    )

    from irisbench.world.vocab import CANVAS, GRID, PATCH

    tokenizer = build_tokenizer()
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    boi = tokenizer.convert_tokens_to_ids("<begin_of_image>")
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
                       num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
                       max_position_embeddings=512, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
                       tie_word_embeddings=False)
    # the understanding tower is never used by image generation: a one-block stub of the right geometry
    vision = JanusVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                               image_size=CANVAS, patch_size=PATCH, num_image_tokens=GRID * GRID,
                               projection_dim=hidden_size)
    # the VQ model decodes nothing here (the world tokenizer does): the smallest stub the config accepts. Its
    # embed_dim is also the width of the image-token embeddings (generation_embeddings, then the aligner):
    # Janus-Pro's 8 would squeeze 763 patch codes through 8 numbers, so it is the LLM width here
    vq = JanusVQVAEConfig(num_embeddings=image_tokenizer.codebook_size, embed_dim=hidden_size, latent_channels=32,
                          base_channels=32, channel_multiplier=[1], num_res_blocks=1, projection_dim=hidden_size,
                          image_token_embed_dim=hidden_size)
    config = JanusConfig(text_config=text, vision_config=vision, vq_config=vq, tie_word_embeddings=False,
                         image_token_id=tokenizer.convert_tokens_to_ids("<image_placeholder>"))
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(config).eval()
    init_image_path(model)
    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
                                               generation_kwargs={"boi_token_id": boi})
    image_processor = JanusImageProcessor(size={"height": CANVAS, "width": CANVAS}, image_mean=[0.5] * 3,
                                          image_std=[0.5] * 3)
    processor = JanusProcessor(image_processor=image_processor, tokenizer=tokenizer, num_image_tokens=GRID * GRID)
    return JanusShapesPolicy(model, processor, image_tokenizer=image_tokenizer, **DEFAULT_SAMPLING)


# ----------------------------------------------------------------------------------------- pretraining


class JanusShapesBatches:
    """Pretraining batches in ``JanusPolicy.sample``'s own layout, a pure function of (seed, step).

    ``maker`` is ``irisbench.train.pretrain``'s ``BatchMaker`` for this policy's image tokenizer (the caller builds it,
    so that this module does not import the pretraining module back): its draws (tag, prompt, scene, image
    codes, unconditional rows) make a batch hold the same scenes whichever model is pretrained; the loss runs
    through ``part_logits``.
    """

    def __init__(self, maker: Any, policy: JanusShapesPolicy) -> None:
        from irisbench.world.vocab import GRID

        self.cfg, self.policy = maker.cfg, policy
        self.maker = maker
        self.n_img = GRID * GRID
        self._cot_ids: dict[str, list[int]] = {}

    def rollout(self, step: int) -> Rollout:
        """The teacher-forcing targets of ``step``'s batch, as a rollout ``part_logits`` reads."""
        from irisbench.world.plan import plan_text

        p = self.policy
        mds, scenes, codes_b, uncond_b, no_plan = self.maker.draws(step)
        rows = [(md["prompt"], "" if bare else plan_text(scene), codes, bool(u))
                for md, scene, codes, u, bare in zip(mds, scenes, codes_b.tolist(), uncond_b, no_plan, strict=True)]
        tokens, cot_ids, img_ids, lengths = [], [], [], []
        for prompt, plan, codes, uncond in rows:
            if prompt not in self._cot_ids:
                self._cot_ids[prompt] = p.encode(cot_request(prompt))
            cot = p.tokenizer(plan, add_special_tokens=False)["input_ids"] + [p.eos_id]
            req = p.encode(image_request(prompt, plan)) + [p.boi_id]
            if uncond:
                req = [t if t in (p.bos_id, p.boi_id) else p.pad_id for t in req]
            tokens.append(cot + list(codes))
            cot_ids.append(self._cot_ids[prompt])
            img_ids.append(req)
            lengths.append(len(cot))
        width = max(len(t) for t in tokens)
        tok = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=bool)
        modality = np.full((len(rows), width), IMAGE, dtype=np.int8)
        for r, (t, n) in enumerate(zip(tokens, lengths, strict=True)):
            tok[r, :len(t)], mask[r, :len(t)], modality[r, :n] = t, True, TEXT
        return Rollout(prompts=[r[0] for r in rows], seeds=[0] * len(rows), images=[], tokens=tok, token_mask=mask,
                       modality=modality, extras={"cot_prompt_ids": cot_ids, "image_prompt_ids": img_ids,
                                                  "text_lengths": lengths, "num_image_tokens": self.n_img})

    def loss(self, step: int, precision: str = "fp32") -> tuple[Any, dict[str, float]]:
        """``plan_weight`` x mean plan/EOS ``-logp`` + (1 - ``plan_weight``) x mean image-code ``-logp`` (one
        token mean over both when ``cfg.plan_weight`` is None); also the plan-only and image-only means.

        The CoT is trained on the first ``cfg.cot_rows`` rows only (all when None): its request, T2I-R1's
        reasoning prompt, is ~150 tokens long, so the text pass costs more than the image pass for a target
        of a few words; the image part is trained on every row.
        """
        import torch

        rollout = self.rollout(step)
        k = len(rollout) if self.cfg.cot_rows is None else min(self.cfg.cot_rows, len(rollout))
        with torch.autocast(self.policy.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            text = self.policy.part_logits(_rows(rollout, k), parts=("text",), logits=True) if k else None
            image = self.policy.part_logits(rollout, parts=("image",), logits=True)
        nll_img = _nll(image["image"], image["image_tokens"]).flatten()
        if text is None:
            nll_text = nll_img.new_zeros(0)
        else:
            nll_text = _nll(text["text"], text["text_tokens"])[text["text_mask"]]
        parts = {"loss_image": float(nll_img.detach().mean()),
                 "loss_plan": float(nll_text.detach().mean()) if len(nll_text) else float("nan")}
        w = self.cfg.plan_weight
        if w is None or not len(nll_text):
            return torch.cat([nll_text, nll_img]).mean(), parts
        return w * nll_text.mean() + (1 - w) * nll_img.mean(), parts


def _nll(logits: Any, tokens: Any) -> Any:
    """Per-position ``-log softmax(logits)[token]`` in fp32."""
    import torch

    return -torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def _rows(rollout: Rollout, k: int) -> Rollout:
    """The first ``k`` rows of a pretraining rollout (tokens and the extras ``part_logits`` reads)."""
    ex = rollout.extras
    return Rollout(prompts=rollout.prompts[:k], seeds=rollout.seeds[:k], images=[], tokens=rollout.tokens[:k],
                   token_mask=rollout.token_mask[:k], modality=rollout.modality[:k],
                   extras={"cot_prompt_ids": ex["cot_prompt_ids"][:k], "image_prompt_ids": ex["image_prompt_ids"][:k],
                           "text_lengths": ex["text_lengths"][:k], "num_image_tokens": ex["num_image_tokens"]})


__all__ = ["DEFAULT_SAMPLING", "IMAGE_TOKENIZER_FILE", "NAME", "SHIPPED_JANUS_SHAPES", "JanusShapesBatches",
           "JanusShapesPolicy", "build_tokenizer", "corpus_words", "create", "load_janus_shapes"]
