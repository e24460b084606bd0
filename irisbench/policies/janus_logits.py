"""Janus-Pro's teacher-forced, differentiable logits of a rollout's tokens: what GRPO trains on.

``JanusPolicy.part_logits`` runs two forward passes per row, because the image prompt re-templates
``"{prompt}. {CoT}"`` (T2I-R1): ``text_logits`` (``lm_head`` on the CoT request + CoT tokens) and
``image_logits`` (``generation_head`` on the image prompt + image tokens); ``per_token`` lays both out like
``rollout.tokens`` with log-prob, self-certainty (raw ``logsumexp - mean``) and entropy. With the policy's
``logits_chunk`` > 0 the statistics come from the hidden states ``logits_chunk`` positions at a time
(``irisbench.core.uncertainty.head_token_stats``), so the (B, L, 102400) logits never exist at once. Every tensor
is created on the policy's device.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from irisbench.policies.base import Rollout
from irisbench.policies.janus_decode import _left_pad, _positions

if TYPE_CHECKING:  # pragma: no cover
    import torch


def ranks() -> int:
    """The process group's size when one is joined (FSDP / DDP under a launcher), else 1."""
    import sys

    if "torch.distributed" not in sys.modules:
        return 1
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@contextmanager
def training_mode(module: Any) -> Iterator[None]:
    """``module.train()`` for the duration (transformers checkpoints decoder blocks only in training mode)."""
    was = module.training
    module.train()
    try:
        yield
    finally:
        module.train(was)


def per_token(policy: Any, rollout: Rollout, out: dict[str, Any], lengths: list[int], n_img: int,
              uncond: bool) -> dict[str, Any]:
    """The per-part outputs laid out like ``rollout.tokens`` (B, T); differentiable."""
    import torch

    from irisbench.core.uncertainty import head_token_stats, token_stats

    dev, (b, width) = policy.device, rollout.tokens.shape

    def lay(text: torch.Tensor | None, image: torch.Tensor) -> torch.Tensor:
        full = image.new_zeros((b, width, *image.shape[2:]))
        for r, n in enumerate(lengths):
            if text is not None:
                full[r, :n] = text[r, :n]
            full[r, n:n + n_img] = image[r]
        return full

    res: dict[str, Any] = {
        "tokens": torch.as_tensor(rollout.tokens, dtype=torch.long, device=dev),
        "mask": torch.as_tensor(rollout.token_mask, dtype=torch.bool, device=dev),
        "modality": torch.as_tensor(rollout.modality, dtype=torch.long, device=dev),
    }
    if "text_hidden" in out:  # chunked: never all positions' logits at once (GRPO memory)
        hid, toks = out["text_hidden"], out["text_tokens"]
        lmax = hid.shape[1]
        if ranks() > 1 and lmax < policy.cot_max_new_tokens:
            # sharded heads gather their weights at every call: every rank must make the same number of
            # calls, so the CoT positions are padded to the cap (same rows on every rank)
            pad = policy.cot_max_new_tokens - lmax
            hid = torch.cat([hid, hid.new_zeros((b, pad, hid.shape[-1]))], dim=1)
            toks = torch.cat([toks, toks.new_zeros((b, pad))], dim=1)
        text = tuple(t[:, :lmax] for t in head_token_stats(hid, policy.model.lm_head, toks,
                                                             chunk_size=policy.logits_chunk))
    else:
        text = token_stats(out["text"], out["text_tokens"])
    if "image_hidden" in out:
        image = head_token_stats(out["image_hidden"], policy.model.model.generation_head, out["image_tokens"],
                                 chunk_size=policy.logits_chunk)
    else:
        image = token_stats(out["image"], out["image_tokens"])
    for key, t_val, i_val in zip(("logp", "self_certainty", "entropy"), text, image, strict=True):
        res[key] = lay(t_val, i_val)
    if uncond:
        res["image_logits"] = lay(None, out["image"])
        res["image_logits_uncond"] = lay(None, out["image_uncond"])
    return res

def text_logits(policy: Any, tokens: torch.Tensor, cot_ids: list[list[int]], lengths: list[int], *,
                head: bool = True) -> dict[str, Any]:
    """``text`` logits (``head=True``) or the ``text_hidden`` states they come from (B, Lmax, D)."""
    import torch

    dev, b = policy.device, tokens.shape[0]
    model, lm = policy.model, policy.model.model.language_model
    out: dict[str, Any] = {}
    lmax = max(lengths, default=0)
    text_tokens = torch.zeros((b, lmax), dtype=torch.long)
    text_mask = torch.zeros((b, lmax), dtype=torch.bool)
    for r, length in enumerate(lengths):
        text_tokens[r, :length] = tokens[r, :length]
        text_mask[r, :length] = True
    if lmax:
        seqs = [list(cot_ids[r]) + tokens[r, :lengths[r]].tolist() for r in range(b)]
        ids, mask = _left_pad(seqs, policy.pad_id, dev)
        hidden = lm(inputs_embeds=model.get_input_embeddings()(ids), attention_mask=mask,
                    position_ids=_positions(mask), use_cache=False).last_hidden_state  # no KV cache to keep
        s = ids.shape[1]
        j = torch.arange(lmax, device=dev)
        idx = torch.stack([(s - lengths[r] - 1 + j).clamp(max=s - 1) for r in range(b)])
        picked = hidden.gather(1, idx.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        if head:
            out["text"] = model.lm_head(picked)
        else:
            out["text_hidden"] = picked
    elif head:
        out["text"] = torch.zeros((b, 0, model.lm_head.out_features), device=dev)
    else:
        out["text_hidden"] = torch.zeros((b, 0, model.lm_head.in_features), device=dev,
                                         dtype=model.lm_head.weight.dtype)
    out["text_tokens"], out["text_mask"] = text_tokens.to(dev), text_mask.to(dev)
    return out

def image_logits(policy: Any, tokens: torch.Tensor, img_ids: list[list[int]], lengths: list[int], n_img: int, *,
                 head: bool = True) -> dict[str, Any]:
    """``image`` logits (``head=True``) or the ``image_hidden`` states (B, N, D) of the image tokens,
    teacher-forced after the image prompt."""
    import torch

    dev, b = policy.device, tokens.shape[0]
    model, lm = policy.model, policy.model.model.language_model
    image_tokens = torch.stack([tokens[r, lengths[r]:lengths[r] + n_img] for r in range(b)]).to(dev)
    ids, mask = _left_pad(img_ids, policy.pad_id, dev)
    p = ids.shape[1]
    embeds = torch.cat([model.get_input_embeddings()(ids),
                        model.prepare_embeddings_for_image_generation(image_tokens)], dim=1)
    mask = torch.cat([mask, torch.ones_like(image_tokens)], dim=1)
    hidden = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=_positions(mask),
                use_cache=False).last_hidden_state
    picked = hidden[:, p - 1:p - 1 + n_img]
    return {
        "image" if head else "image_hidden": model.model.generation_head(picked) if head else picked,
        **({"image_hidden": picked} if head and policy.logits_chunk else {}),
        "image_tokens": image_tokens,
        "image_mask": torch.ones_like(image_tokens, dtype=torch.bool),
    }


__all__ = ["image_logits", "per_token", "ranks", "text_logits", "training_mode"]
