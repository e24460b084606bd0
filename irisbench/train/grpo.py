"""GRPO maths as small pure torch functions, with trl's ``GRPOTrainer`` names and semantics.

Definitions follow trl's ``GRPOTrainer`` (``_generate_and_score_completions`` / ``_compute_loss``;
docs: https://huggingface.co/docs/trl/main/grpo_trainer, "Loss Types") and docs/method.md §3:

- advantages: ``A_i = (r_i - mean_G r) / (std_G r + 1e-4)`` with the unbiased (Bessel) std of the
  prompt's group of ``num_generations`` rewards; rows are group-major (rows ``i*G .. i*G+G-1`` are
  one prompt). ``scale_rewards=False`` (Dr. GRPO) keeps only the mean-centring.
- per-token loss: ``-min(rho * A, clip(rho, 1 - eps, 1 + eps_high) * A) + beta * k3`` with
  ``rho = exp(logp - old_logp)`` and ``k3 = exp(ref - logp) - (ref - logp) - 1``.
- aggregation (``loss_type``), for one micro-batch of one process, as trl's ``_compute_loss``:
  ``"grpo"`` mean over each sequence's tokens, then over the micro-batch's sequences; ``"bnpo"`` sum over
  the micro-batch's tokens / their number (IRIS's "token-mean over text and image tokens of the
  micro-batch"); ``"dr_grpo"`` sum / (B_micro * max_completion_length); these three are divided by
  ``gradient_accumulation_steps``. ``"dapo"`` sum / (num_items_in_batch / num_processes), with
  ``num_items_in_batch`` the token count of the whole step (every micro-batch, every process).
  trl averages gradients over processes; irisbench sums them, so every value here is also divided by
  ``num_processes``: summed over a step's micro-batches and processes, the losses are trl's loss.

Importance sampling level (trl's ``importance_sampling_level``): ``"token"`` (GRPO, PPO) uses the per-token
ratio ``rho_t``; ``"sequence"`` (GSPO, arXiv 2507.18071) one ratio per sequence, the geometric mean
``s_i = exp(mean_t (logp - old_logp))`` over its real tokens, clipped at the sequence level; as trl, the
clipped term ``-min(s_i A_i, clip(s_i) A_i)`` stands for every token of the sequence and is then aggregated
by ``loss_type`` like a per-token loss (with ``"grpo"`` this is GSPO's ``(1/G) sum_i`` exactly). Its gradient
equals that of GSPO-token's stop-gradient form ``s_i,t = sg[s_i] * pi_t / sg[pi_t]`` when the advantage is
the same for every token, as here.

Dynamic sampling (DAPO, arXiv 2503.14476; ``keep``): rows of groups whose rewards are all equal
(``spread_rows``) leave the loss entirely (policy and KL terms), and the normalisers count the kept rows
only: "grpo" averages over kept sequences, "bnpo" divides by kept tokens, "dr_grpo" by ``B_kept *
max_completion_length``, "dapo" by the step's kept token count (the caller's ``num_items_in_batch``).
Unlike DAPO, nothing is re-sampled to refill the batch: a step keeps fewer groups (or none: loss 0).

With ``num_iterations == 1`` (IRIS: one update per batch) ``old_logp = logp.detach()``, so
``rho == 1``, clipping never binds, and the gradient is the REINFORCE gradient ``-A * grad logp``
averaged as ``loss_type`` says.

Departures from trl, all deliberate: a group whose rewards are all equal gets advantages of exactly
0 (trl can leave ``~1e-13`` rounding noise from the mean); padded positions are zeroed *before* the
maths, so a ``-inf`` log-prob on padding cannot send NaN into the loss or its gradient; a reference
log-prob, when given, is always used for the ``kl`` metric (added to the loss only when beta != 0),
and beta != 0 without one is an error rather than a silent no-KL run; ``dr_grpo`` rejects sequences
longer than ``max_completion_length``; every input is moved to the device of ``logp``.

This module imports torch at import time: import it only from code that needs it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
LOSS_TYPES: tuple[str, ...] = ("grpo", "bnpo", "dr_grpo", "dapo")
ImportanceSamplingLevel = Literal["token", "sequence"]
IMPORTANCE_SAMPLING_LEVELS: tuple[str, ...] = ("token", "sequence")
STD_EPS: float = 1e-4


def _divisors(n: int) -> list[int]:
    return [d for d in range(2, n + 1) if n % d == 0]


def _scale_mode(scale_rewards: bool | str) -> str:
    if scale_rewards is True or scale_rewards == "group":
        return "group"
    if scale_rewards is False or scale_rewards == "none":
        return "none"
    if scale_rewards == "batch":
        return "batch"
    raise ValueError(f"scale_rewards must be True/'group', 'batch' or False/'none'; got {scale_rewards!r}")


def group_advantages(
    rewards: torch.Tensor | np.ndarray | list[float],
    num_generations: int,
    *,
    scale_rewards: bool | str = True,
    eps: float = STD_EPS,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Group-relative advantages (B,) from group-major rewards (B,), and reward statistics.

    ``scale_rewards``: ``True``/``"group"`` divide by (group std + eps), ``"batch"`` by (batch std +
    eps), ``False``/``"none"`` do not divide. Computed in float64; returned in the rewards' float
    dtype (float64 for numpy or integer input). Stats (trl's log names): ``reward`` (mean),
    ``reward_std`` (mean of the per-group unbiased stds), ``frac_reward_zero_std`` (share of groups
    whose std is ``isclose`` to 0).
    """
    r = torch.as_tensor(rewards)
    out_dtype = r.dtype if r.dtype.is_floating_point else torch.float64
    if r.dim() != 1:
        raise ValueError(f"rewards must be 1-D (B,), got shape {tuple(r.shape)}")
    b = r.shape[0]
    if isinstance(num_generations, bool) or not isinstance(num_generations, (int, np.integer)):
        raise ValueError(f"num_generations must be an int >= 2, got {num_generations!r}")
    g = int(num_generations)
    if g < 2:
        raise ValueError(f"num_generations must be >= 2 (a group needs two samples to compare), got {g}")
    if b == 0 or b % g:
        valid = ", ".join(map(str, _divisors(b))) or "none (B must be >= 2)"
        raise ValueError(
            f"the number of rewards B={b} is not a positive multiple of num_generations={g}; "
            f"valid num_generations for B={b}: {valid}"
        )
    if not (eps >= 0):
        raise ValueError(f"eps must be >= 0, got {eps}")
    mode = _scale_mode(scale_rewards)
    r64 = r.detach().to(torch.float64)
    if not torch.isfinite(r64).all():
        bad = torch.nonzero(~torch.isfinite(r64)).flatten().tolist()
        raise ValueError(f"rewards must be finite; non-finite at rows {bad[:10]}")
    grouped = r64.view(-1, g)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)  # unbiased, as torch.std and trl
    adv = grouped - mean
    if mode == "group":
        adv = adv / (std + eps)
    elif mode == "batch":
        adv = adv / (r64.std() + eps)
    flat = grouped.amax(dim=1) == grouped.amin(dim=1)
    adv = torch.where(flat.unsqueeze(1), torch.zeros_like(adv), adv)
    stats = {
        "reward": float(r64.mean()),
        "reward_std": float(std.mean()),
        "frac_reward_zero_std": float(torch.isclose(std, torch.zeros_like(std)).double().mean()),
    }
    return adv.reshape(-1).to(out_dtype), stats


def spread_rows(rewards: torch.Tensor | np.ndarray | list[float], num_generations: int) -> torch.Tensor:
    """(B,) bool: the rows of groups whose rewards are not all equal (DAPO's dynamic sampling keeps these).

    Equality is exact, as ``group_advantages``' zero advantages: a kept group is one with a nonzero advantage.
    """
    r = torch.as_tensor(rewards).detach().reshape(-1, int(num_generations))
    return (r.amax(dim=1) != r.amin(dim=1)).repeat_interleave(int(num_generations))


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || ref): ``exp(ref - logp) - (ref - logp) - 1`` (>= 0)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _masked_frac(flags: torch.Tensor, mask: torch.Tensor | None) -> float:
    if mask is None:
        return float(flags.double().mean()) if flags.numel() else float("nan")
    n = mask.sum()
    return float((flags & mask).sum().double() / n) if n > 0 else float("nan")


def clipped_objective(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    mask: torch.Tensor | None = None,
    importance_sampling_level: ImportanceSamplingLevel = "token",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token PPO/GRPO clipped loss ``-min(rho*A, clip(rho, 1-eps, 1+eps_high)*A)`` and clip stats.

    ``advantages`` is (B,) (broadcast over tokens) or the shape of ``logp``. ``epsilon_high``
    defaults to ``epsilon`` (DAPO's asymmetric clip when set). ``importance_sampling_level="sequence"``
    (GSPO; needs ``mask`` and (B,) advantages): ``rho`` is the sequence ratio ``exp(sum_t m (logp - old) /
    max(1, sum_t m))``, the same for every token of the row. Stats over ``mask`` (all tokens if None; over
    the sequences with a real token at the sequence level, as trl), trl's names: ``clip_ratio/low_mean``
    (rho < 1-eps with A < 0), ``clip_ratio/high_mean`` (rho > 1+eps_high with A > 0),
    ``clip_ratio/region_mean`` (either): where the clip binds.
    """
    eps_low = float(epsilon)
    eps_high = eps_low if epsilon_high is None else float(epsilon_high)
    if not 0 <= eps_low < 1:
        raise ValueError(f"epsilon must be in [0, 1), got {epsilon}")
    if not eps_high >= 0:
        raise ValueError(f"epsilon_high must be >= 0, got {epsilon_high}")
    if old_logp.shape != logp.shape:
        raise ValueError(f"old_logp shape {tuple(old_logp.shape)} != logp shape {tuple(logp.shape)}")
    adv = advantages
    if adv.dim() == 1 and logp.dim() == 2:
        if adv.shape[0] != logp.shape[0]:
            raise ValueError(f"advantages has {adv.shape[0]} rows, logp has {logp.shape[0]}")
        adv = adv.unsqueeze(1)
    elif adv.shape != logp.shape:
        raise ValueError(f"advantages shape {tuple(adv.shape)} must be (B,) or logp's {tuple(logp.shape)}")
    adv = adv.detach().to(device=logp.device, dtype=logp.dtype)
    m = None if mask is None else mask.to(logp.device).bool()
    if importance_sampling_level == "token":
        ratio = torch.exp(logp - old_logp)
    elif importance_sampling_level == "sequence":
        if m is None or logp.dim() != 2 or advantages.dim() != 1:
            raise ValueError("importance_sampling_level='sequence' needs (B, T) log-probs, a mask and (B,) advantages")
        mf = m.to(logp.dtype)
        log_s = ((logp - old_logp) * mf).sum(dim=-1, keepdim=True) / mf.sum(dim=-1, keepdim=True).clamp(min=1.0)
        ratio = torch.exp(log_s)
        m = m.any(dim=-1, keepdim=True)  # stats over sequences
    else:
        raise ValueError(f"importance_sampling_level must be one of {', '.join(IMPORTANCE_SAMPLING_LEVELS)}; "
                         f"got {importance_sampling_level!r}")
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv).expand_as(logp)
    with torch.no_grad():
        low = (ratio < 1 - eps_low) & (adv < 0)
        high = (ratio > 1 + eps_high) & (adv > 0)
        stats = {
            "clip_ratio/low_mean": _masked_frac(low, m),
            "clip_ratio/high_mean": _masked_frac(high, m),
            "clip_ratio/region_mean": _masked_frac(low | high, m),
        }
    return per_token, stats


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive int; got {value!r}")
    return int(value)


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float = 0.0,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    loss_type: LossType = "grpo",
    max_completion_length: int | None = None,
    num_items_in_batch: float | None = None,
    gradient_accumulation_steps: int = 1,
    num_processes: int = 1,
    importance_sampling_level: ImportanceSamplingLevel = "token",
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """One micro-batch's term of the GRPO loss (a scalar to minimise) and metrics, as trl's ``_compute_loss``.

    ``logp`` (B, T): log-probs of the sampled tokens under the current policy (differentiable);
    ``old_logp``: under the rollout policy, or None for ``num_iterations == 1`` (then
    ``logp.detach()``, ratio 1); ``ref_logp``: under the frozen reference (needed when beta != 0);
    ``advantages`` (B,) or (B, T); ``mask`` (B, T) real completion tokens. With ``S = sum m*l`` and
    ``N = max(1, sum m)`` over this micro-batch, ``A = gradient_accumulation_steps`` and ``W =
    num_processes``: "grpo" ``mean_i (sum_t m*l / max(1, sum_t m)) / (A W)``; "bnpo" ``S / N / (A W)``;
    "dr_grpo" ``S / (B * max_completion_length) / (A W)``; "dapo" ``S / num_items_in_batch`` (the token
    count over every micro-batch and process of the step). The defaults (A = W = 1) give trl's formula
    for one batch; summing the terms of all micro-batches and processes gives the step's loss (gradients
    are summed over processes). ``importance_sampling_level``: ``"token"`` or ``"sequence"`` (GSPO, see
    the module doc). ``keep`` (B,) bool: the rows that enter the loss (dynamic sampling, ``spread_rows``);
    ``S``, ``N`` and ``B`` then count kept rows only, and ``num_items_in_batch`` must count the step's kept
    tokens. Metrics: ``loss``, ``kl`` (masked mean of k3, when a reference is given), the clip ratios of
    ``clipped_objective``, ``num_tokens`` (over every real token, kept or not).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}; got {loss_type!r}")
    if logp.dim() != 2:
        raise ValueError(f"logp must be (B, T), got shape {tuple(logp.shape)}")
    if tuple(mask.shape) != tuple(logp.shape):
        raise ValueError(f"mask shape {tuple(mask.shape)} != logp shape {tuple(logp.shape)}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta != 0 and ref_logp is None:
        raise ValueError(f"beta={beta} needs ref_logp (log-probs under the reference model); got None")
    share = _positive_int(gradient_accumulation_steps, "gradient_accumulation_steps") * \
        _positive_int(num_processes, "num_processes")
    dev = logp.device
    m = torch.as_tensor(mask, device=dev).bool()
    dtype = _compute_dtype(logp)
    zero = torch.zeros((), dtype=dtype, device=dev)
    lp = torch.where(m, logp.to(dtype), zero)
    old = lp.detach() if old_logp is None else torch.where(m, old_logp.detach().to(dev, dtype), zero)
    per_token, metrics = clipped_objective(lp, old, torch.as_tensor(advantages, device=dev), epsilon, epsilon_high,
                                           mask=m, importance_sampling_level=importance_sampling_level)
    metrics = dict(metrics)
    n_tokens = m.sum()
    if ref_logp is not None:
        if tuple(ref_logp.shape) != tuple(logp.shape):
            raise ValueError(f"ref_logp shape {tuple(ref_logp.shape)} != logp shape {tuple(logp.shape)}")
        kl = k3_kl(lp, torch.where(m, ref_logp.detach().to(dev, dtype), zero))
        metrics["kl"] = float((kl.detach() * m).sum() / n_tokens) if n_tokens > 0 else float("nan")
        if beta != 0:
            per_token = per_token + beta * kl
    if keep is not None:
        keep = torch.as_tensor(keep, device=dev).bool()
        if tuple(keep.shape) != (logp.shape[0],):
            raise ValueError(f"keep must be (B,) = ({logp.shape[0]},), got shape {tuple(keep.shape)}")
        m = m & keep.unsqueeze(1)
    per_token = torch.where(m, per_token, zero)
    mf = m.to(dtype)
    rows = logp.shape[0] if keep is None else int(keep.sum())
    if loss_type == "grpo":
        loss = (per_token.sum(dim=-1) / mf.sum(dim=-1).clamp(min=1.0)).sum() / max(rows, 1) / share
    elif loss_type == "bnpo":
        loss = per_token.sum() / mf.sum().clamp(min=1.0) / share
    elif loss_type == "dr_grpo":
        mcl = _positive_int(max_completion_length, "loss_type='dr_grpo' needs max_completion_length, which")
        longest = int(m.sum(dim=-1).max()) if m.numel() else 0
        if longest > mcl:
            raise ValueError(f"a completion has {longest} tokens, more than max_completion_length={mcl}")
        loss = per_token.sum() / (max(rows, 1) * mcl) / share
    else:
        if num_items_in_batch is None or not float(num_items_in_batch) > 0:
            raise ValueError("loss_type='dapo' needs num_items_in_batch, the step's token count over every "
                             f"micro-batch and process (> 0); got {num_items_in_batch!r}")
        if int(m.sum()) > float(num_items_in_batch):
            raise ValueError(f"num_items_in_batch={num_items_in_batch} is less than this micro-batch's "
                             f"{int(m.sum())} tokens: it must count the whole step")
        loss = per_token.sum() / float(num_items_in_batch)
    metrics["loss"] = float(loss.detach())
    metrics["num_tokens"] = int(n_tokens)
    return loss, metrics
