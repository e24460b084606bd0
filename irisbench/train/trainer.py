"""The GRPO loop for text-to-image policies: rollouts -> rewards -> group advantages -> update.

One step, split as trl's ``GRPOTrainer``: ``_generate`` draws ``prompts_per_step`` train prompts (a tag
uniformly, then a prompt of it; a pure function of (seed, step)), samples ``num_generations`` rollouts of
each with per-row seeds derived from (seed, step, prompt, sample), and fixes the loss normalisers
(``num_items_in_batch`` over every rank and micro-batch, ``max_completion_length`` from the policy);
``_score`` gives each micro-batch its rewards (the reward context carries those keys as
``irisbench.train.rewards.RowKeys``, from which the null rewards draw), group advantages and reference log-probs
(no gradients);
``_compute_loss`` is ``irisbench.train.grpo.grpo_loss`` with those normalisers, so ``loss_type`` means what it
means in trl whatever the batch, ranks and accumulation. ``num_iterations`` clipped-ratio updates, with
an optional k3 KL penalty against a frozen copy of the starting policy.

Where this departs from IRIS's released code (every choice is a recorded config field):

- ``sc_source``: the intrinsic reward's self-certainty comes, by default, from the same teacher-forced
  pass that gives the policy-gradient log-probs; IRIS runs a second forward just for it
  (``second-pass``), and the sampling loop's own statistics (``sampling``) are free. With one update per
  batch all three are the same numbers up to float round-off.
- ``logp_source``: log-probs of image tokens from the conditional branch (IRIS, T2I-R1) or from the
  CFG-guided distribution that was actually sampled (AR-GRPO).
- A micro-batch is scored right after its first teacher-forced forward (so ``sc_source=teacher-forced``
  reuses that pass), not all micro-batches before the first update as trl does; rewards and advantages
  never carry gradients, and micro-batches hold whole groups, so the numbers are trl's.
- Gradients are summed over ranks (not averaged, as in trl), and ``grpo_loss`` divides by the number of
  processes instead: ``grpo`` and ``dapo`` (the token mean over the whole step) give the same update for
  any split of the step into ranks and micro-batches; ``bnpo`` (the token mean of each micro-batch,
  IRIS's choice) and ``dr_grpo`` depend on the micro-batch, as in trl.

Data parallel: under ``torchrun`` each rank takes whole groups (``prompts_per_step`` must divide by the
world size), rewards stay local (advantages are per group), metrics are all-reduced, and gradients are
summed with ``all_reduce`` (``parallel: ddp``) or reduce-scattered onto sharded parameters and AdamW
state (``parallel: fsdp``, ``irisbench.train.sharding``). In-training evaluation shards its prompts over the
ranks. The same code runs as 2 CPU processes with gloo in the tests.

Loud failures: the run stops with one line (``TrainingStalledError``) when every group's rewards were
identical for ``zero_spread_steps`` consecutive steps (default 3), or when the gradient norm is exactly 0
although some group's rewards differ. No rule here zeroes the reward of a row that reached a length cap (a
Janus row always carries its 576 image tokens, which are never "truncated"). Every step logs
``logp_gap_mean`` / ``logp_gap_max``: |rollout log-prob - teacher-forced log-prob| over the loss's tokens
(the sampling loop's KV-cached, batched numbers against the replay the update trains on).

Run folder (``kind: train``): ``config.yaml``, ``env.json``, ``train/metrics.jsonl`` (+ ``.parquet``),
``checkpoints/step-N/`` (policy save folder + ``optimizer.safetensors`` + ``trainer_state.json``,
written atomically), ``eval/<split>/step-N/`` (eval runs). Resuming after ``kill -9`` restarts from the
newest complete checkpoint and reproduces the metrics an uninterrupted run logs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irisbench.core.distributed import Dist
from irisbench.core.errors import IrisbenchError
from irisbench.core.uncertainty import modality_means
from irisbench.evaluation.eval_run import EvalRun
from irisbench.policies.base import TEXT, Rollout, TokenLogits, TrainablePolicy, derive_seed
from irisbench.train.config import EXECUTION_FIELDS, TrainConfig

METRICS_DIR = "train"
TIMING_KEYS = ("s_per_step", "t_sample", "t_reward", "t_forward", "t_backward", "t_optimizer", "elapsed_s", "time")


class TrainingDivergedError(IrisbenchError, RuntimeError):
    """Non-finite logits, rewards or loss: the run stops; the last good checkpoint is kept."""


class TrainingStalledError(IrisbenchError, RuntimeError):
    """A run that trains on nothing: every group's reward spread zero for ``zero_spread_steps`` steps, or a
    gradient norm of exactly 0 although some group's rewards differ. The run stops with one line."""


def check_stall(step: int, zero_spread_run: int, frac_zero: float, grad_norm: float, cfg: TrainConfig) -> int:
    """The count of consecutive steps whose every group had zero reward spread, after step ``step`` (0-based);
    raises ``TrainingStalledError`` when it reaches ``cfg.zero_spread_steps`` or when the gradient norm of the
    step's first (on-policy) update is exactly 0 although some group's rewards differ (then the loss cannot be
    what moves the policy)."""
    run = zero_spread_run + 1 if frac_zero >= 1.0 else 0
    if cfg.zero_spread_steps and run >= cfg.zero_spread_steps:
        raise TrainingStalledError(
            f"step {step + 1}: every group's rewards were identical for {run} consecutive steps (zero spread, "
            "zero advantages: nothing is learned); check the reward (a rule that zeroes it, a saturated "
            "verifier) or raise num_generations; zero_spread_steps=0 disables this stop")
    if grad_norm == 0.0 and frac_zero < 1.0:
        raise TrainingStalledError(
            f"step {step + 1}: the gradient norm is exactly 0 although rewards differ within some group: the "
            "update trains on nothing (check freeze patterns, the loss mask and the log-prob source)")
    return run


SCHEDULERS = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def build_scheduler(optimizer: Any, cfg: TrainConfig) -> Any:
    """``transformers.get_scheduler`` for ``cfg.lr_scheduler`` (constant / linear / cosine decay to 0 at
    ``cfg.steps``) after ``cfg.warmup_steps`` of linear warmup from 0 (transformers' warmup: step s of the
    warmup runs at ``s / warmup_steps`` of the peak)."""
    from transformers import get_scheduler

    return get_scheduler(SCHEDULERS[cfg.lr_scheduler], optimizer, num_warmup_steps=cfg.warmup_steps,
                         num_training_steps=cfg.steps)


def step_prompts(items: list[dict], cfg: TrainConfig, step: int) -> list[int]:
    """Indices of this step's prompts: a tag uniformly at random, then a prompt of that tag."""
    rng = np.random.default_rng([cfg.seed, step, 7])
    by_tag: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_tag.setdefault(it.get("tag", ""), []).append(i)
    tags = sorted(by_tag)
    return [int(rng.choice(by_tag[tags[int(rng.integers(len(tags)))]])) for _ in range(cfg.prompts_per_step)]


def _with_stats(rollout: Rollout, sc: np.ndarray, ent: np.ndarray) -> Rollout:
    clone = copy.copy(rollout)
    clone.self_certainty, clone.entropy = sc.astype(np.float32), ent.astype(np.float32)
    return clone


@dataclass
class _Batch:
    """One step on one rank: rollouts, micro-batches (whole groups), the loss normalisers fixed by
    ``_generate``, and per micro-batch what ``_score`` adds (advantages, old and reference log-probs)."""

    rollout: Rollout
    metas: list[dict]
    keys: Any  # irisbench.train.rewards.RowKeys: (training seed, step, prompt slot, rollout index) per row
    micro: list[slice]
    norm: dict[str, Any]
    n_tok: float
    n_seq: float
    t: dict[str, float]
    advantages: dict[int, Any] = field(default_factory=dict)
    old_logp: dict[int, Any] = field(default_factory=dict)
    ref_logp: dict[int, Any] = field(default_factory=dict)
    rewards: list[np.ndarray] = field(default_factory=list)
    terms: dict[str, list[float]] = field(default_factory=dict)
    zero_std: float = 0.0
    keep: dict[int, Any] = field(default_factory=dict)  # drop_zero_spread_groups: the rows that enter the loss


class GRPOTrainer:
    """Drives one GRPO run into a run folder; ``train()`` resumes if the folder has checkpoints."""

    def __init__(self, cfg: TrainConfig, out: str | Path, *, progress: bool = True,
                 allow_config_change: bool = False, policy: Any = None, reward: Any = None,
                 device: str | None = None) -> None:
        """``policy``: a ``TrainablePolicy`` to start from instead of ``cfg.policy``; ``reward``: a reward
        (``irisbench.train.rewards.Reward``) used instead of ``cfg.reward`` (programmatic use and tests);
        ``device``: where the policy runs (``irisbench.core.devices.resolve_device``; default cuda when available)."""
        import torch

        cfg.check()
        from irisbench.train.tracking import report_to_names

        self.report_to = report_to_names(cfg.report_to)  # a backend not installed: one line, nothing written
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self._first_grad_norm = math.nan  # the last step's on-policy gradient norm (the stall check's)
        # the device the policy is loaded on (irisbench.core.devices; under a launcher cuda:LOCAL_RANK); recorded
        # in env.json, not in the config, so that a run may resume on another device
        self.dist = Dist.from_env(device)
        self.device = self.dist.device
        if cfg.prompts_per_step % self.dist.world_size:
            raise ValueError(f"prompts_per_step={cfg.prompts_per_step} must be divisible by the number of "
                             f"processes ({self.dist.world_size}): each rank takes whole groups")
        per_rank = cfg.prompts_per_step // self.dist.world_size
        if per_rank % cfg.gradient_accumulation_steps:
            raise ValueError(f"each of the {self.dist.world_size} processes takes {per_rank} prompts per step, "
                             f"which gradient_accumulation_steps={cfg.gradient_accumulation_steps} must divide "
                             "(a micro-batch holds whole groups)")
        torch.set_num_threads(cfg.num_threads)
        self.allow_config_change = allow_config_change
        self._policy, self._reward = policy, reward

    # ------------------------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        import torch

        from irisbench.core.devices import device_record
        from irisbench.core.provenance import env_info
        from irisbench.core.runs import RunDir
        from irisbench.policies import load_policy
        from irisbench.suites import load_suite, resolve_prompts
        from irisbench.train.rewards import build_reward

        cfg = self.cfg
        if self.dist.main:
            env = {**env_info(), **device_record(self.device)}
            self.run = RunDir.open_or_create(self.out, kind="train", config=cfg.to_dict(), env=env,
                                             allow_config_change=self.allow_config_change,
                                             resumable=EXECUTION_FIELDS)
        self.dist.barrier()
        if not self.dist.main:
            from irisbench.core.runs import RunDir

            self.run = RunDir.open(self.out)
        from irisbench.train.checkpoints import complete_checkpoints

        ckpts = complete_checkpoints(self.out)
        self.start_step = ckpts[-1][0] if ckpts else 0
        if ckpts:
            self.policy = load_policy(str(ckpts[-1][1]), device=self.device,
                                      **({"trainable": True} if cfg.lora is not None else {}))
        else:
            self.policy = self._policy if self._policy is not None else \
                load_policy(cfg.policy, cfg.model, device=self.device, **cfg.policy_options)
            if cfg.lora is not None:  # adapters in place, base frozen (irisbench.policies.lora)
                from irisbench.policies.lora import LoraSettings, attach_lora

                self.policy = attach_lora(self.policy, LoraSettings.from_config(cfg.lora), seed=cfg.seed, base={
                    "policy": cfg.policy, "model": cfg.model, "policy_options": cfg.policy_options})
                torch.manual_seed(derive_seed(cfg.seed, "lora-dropout"))  # its masks: a function of the seed
        if not isinstance(self.policy, TrainablePolicy):
            missing = [n for n in ("model", "vocab_sizes", "max_completion_length", "token_logits", "fsdp_units",
                                   "save") if not hasattr(self.policy, n)]
            raise ValueError(f"policy {getattr(self.policy, 'name', '?')!r} cannot be trained: it lacks "
                             f"{', '.join(missing)} (irisbench.policies.base.TrainablePolicy)")
        self.world = self.policy.world
        self.items, self.prompt_prov = self._training_prompts(load_suite(cfg.suite), resolve_prompts)
        if self._reward is None:
            self.reward = build_reward(cfg.reward, weights=cfg.reward_weights, options=cfg.reward_options or None)
        else:
            from irisbench.train.rewards import CompositeReward

            self.reward = self._reward if isinstance(self._reward, CompositeReward) else \
                CompositeReward(terms=(self._reward,), weights=(1.0,), name=self._reward.name)
        self.context = self._reward_context()
        model = self.policy.model
        for name, p in model.named_parameters():
            if any(pat in name for pat in cfg.freeze):
                p.requires_grad_(False)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError(f"freeze patterns {cfg.freeze} froze every parameter")
        self.ref = None
        if cfg.beta > 0 and cfg.lora is not None:
            self.ref = self.policy.reference()  # the base, adapters off: the same weights, no copy
        elif cfg.beta > 0:
            self.ref = copy.deepcopy(self.policy) if not ckpts else self._load_reference()
            self.ref.model.eval().requires_grad_(False)
        self._ref_saved = cfg.lora is not None or (self.out / "checkpoints" / "reference").is_dir()
        if cfg.freeze_image_tokens:
            from irisbench.train.config import ConfigError

            if not hasattr(self.policy, "freeze_image_tokens"):
                raise ConfigError(f"freeze_image_tokens: policy {self.policy.name!r} keeps its image tokens in "
                                  "separate modules; freeze them by name with freeze: [...]")
            self.policy.freeze_image_tokens()
        if cfg.parallel == "fsdp":
            from irisbench.train.sharding import shard

            for policy in (self.policy, self.ref):
                if policy is not None:
                    shard(policy)
            self.params = [p for p in model.parameters() if p.requires_grad]  # now sharded
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                           weight_decay=cfg.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.elapsed = 0.0
        if ckpts:
            self._restore(ckpts[-1][1])
        (self.out / METRICS_DIR).mkdir(exist_ok=True)

    def _reward_context(self) -> dict[str, Any]:
        """What the rewards read besides the rollout (``irisbench.train.rewards.reward_context``): the shapes world's
        exact judge, and a CLIP scorer when a ``clip`` term is configured."""
        from irisbench.train.rewards import reward_context

        return reward_context(self.reward, self.world, device=self.device)

    def _training_prompts(self, suite: Any, resolve_prompts: Any) -> tuple[list[dict], dict[str, Any]]:
        """The shapes world's train split, or the user's prompt file (required for open-world models).

        A ``.txt`` file holds one prompt per line (as T2I-R1's training mix); anything else is read as
        GenEval-format metadata.
        """
        from irisbench.train.config import ConfigError

        file = self.cfg.prompts_file
        if self.world == "open" and not file:
            raise ConfigError("training an open-world policy needs prompts_file=PATH: a .txt file with one prompt "
                              "per line or GenEval-format metadata (evaluation prompts are never trained on)")
        if file and str(file).endswith(".txt"):
            path = Path(file)
            if not path.is_file():
                raise ConfigError(f"prompts_file: {path} does not exist")
            lines = [x.strip() for x in path.read_text(encoding="utf-8").splitlines()]
            items = [{"tag": "prompt", "prompt": x} for x in lines if x]
            if not items:
                raise ConfigError(f"prompts_file: {path} holds no prompts")
            return items, {"source": "file", "file": str(path), "n_prompts": len(items)}
        return resolve_prompts(suite, self.world, self.cfg.split, file, training=True)

    def _load_reference(self) -> Any:
        from irisbench.policies import load_policy

        ref_dir = self.out / "checkpoints" / "reference"
        if not ref_dir.is_dir():
            raise FileNotFoundError(f"{ref_dir}: the frozen reference policy of this run is missing")
        return load_policy(str(ref_dir), device=self.device)

    def _restore(self, ckpt: Path) -> None:
        from irisbench.train.checkpoints import restore_optimizer

        loader = None
        if self.cfg.parallel == "fsdp":
            from irisbench.train.sharding import load_full_optimizer_tensors

            def loader(tensors: dict[str, Any], groups: list[dict[str, Any]]) -> None:
                load_full_optimizer_tensors(self.policy, self.optimizer, tensors, groups)

        state = restore_optimizer(ckpt, self.optimizer, self.scheduler, loader=loader)
        self.elapsed = float(state.get("elapsed_s", 0.0))
        if self.cfg.lora is not None and state.get("rng.torch") is not None:  # the adapters' dropout masks go on
            import torch

            torch.set_rng_state(state["rng.torch"])

    def _save(self, step: int) -> Path | None:
        """Every rank calls it (sharded state is gathered onto rank 0); rank 0 writes ``step-N``."""
        from irisbench.train.checkpoints import CHECKPOINTS, save_checkpoint
        from irisbench.train.sharding import full_model_state, full_optimizer_tensors, save_policy

        root = self.out / CHECKPOINTS
        if self.ref is not None and not self._ref_saved:
            root.mkdir(parents=True, exist_ok=True)
            tmp = root / f".tmp-reference-{os.getpid()}"
            save_policy(self.ref, tmp, main=self.dist.main)
            if self.dist.main:
                os.replace(tmp, root / "reference")
            self._ref_saved = True
        model_state = optimizer_state = None
        if self.cfg.parallel == "fsdp":
            model_state = full_model_state(self.policy)
            optimizer_state = full_optimizer_tensors(self.policy, self.optimizer)
        if not self.dist.main:
            return None
        return save_checkpoint(self.out, step, self.policy, self.optimizer, self.scheduler,
                               {"config": self.cfg.to_dict(), "elapsed_s": self.elapsed},
                               keep_last=self.cfg.keep_last, fmt="irisbench.train.grpo-state",
                               model_state=model_state, optimizer_state=optimizer_state)

    # ------------------------------------------------------------------------------------ one step
    def _rollout(self, step: int) -> tuple[Rollout, list[dict], Any]:
        """This rank's rollouts, their prompts' metadata and their ``RowKeys`` (the sampling seeds' keys)."""
        from irisbench.train.rewards import RowKeys

        cfg, g = self.cfg, self.cfg.num_generations
        idx = step_prompts(self.items, cfg, step)
        per_rank = len(idx) // self.dist.world_size
        mine = list(enumerate(idx))[self.dist.rank * per_rank:(self.dist.rank + 1) * per_rank]
        seeds = [derive_seed(cfg.seed, "grpo", step, k, j) for k, _ in mine for j in range(g)]
        import torch

        from irisbench.train.sharding import gathered

        with torch.no_grad(), gathered(self.policy):  # ranks sample different lengths: no collectives inside
            rollout = self.policy.sample([self.items[i]["prompt"] for _, i in mine], n=g, seed=seeds,
                                         cfg=cfg.cfg, temperature=cfg.temperature, top_k=cfg.top_k)
        keys = RowKeys.groups(cfg.seed, step, [k for k, _ in mine], g)
        return rollout, [self.items[i] for _, i in mine for _ in range(g)], keys

    def _generate(self, step: int) -> _Batch:
        """This rank's rollouts and the step's loss normalisers (trl: ``_generate_and_score_completions``)."""
        a = self.cfg.gradient_accumulation_steps
        t0 = time.perf_counter()
        rollout, metas, keys = self._rollout(step)
        b = len(rollout)
        n_tok, n_seq = self.dist.all_sum([float(self._kept(rollout).sum()), float(b)])
        size = b // a  # whole groups: prompts per rank divide by the accumulation steps (checked in __init__)
        norm = {"num_items_in_batch": n_tok, "max_completion_length": int(self.policy.max_completion_length),
                "gradient_accumulation_steps": a, "num_processes": self.dist.world_size}
        return _Batch(rollout=rollout, metas=metas, keys=keys, micro=[slice(s, s + size) for s in range(0, b, size)],
                      norm=norm, n_tok=n_tok, n_seq=n_seq, t={"t_sample": time.perf_counter() - t0})

    def _kept(self, rollout: Rollout) -> np.ndarray:
        """The tokens the loss and the reward see: every real token, less the forced ones when
        ``mask_forced_tokens``."""
        if self.cfg.mask_forced_tokens and rollout.forced is not None:
            return rollout.token_mask & ~rollout.forced
        return rollout.token_mask

    def _logps(self, tf: TokenLogits, part: Rollout) -> Any:
        """Per-token log-probs for the policy gradient: conditional, or CFG-guided on image tokens."""
        if self.cfg.logp_source == "conditional":
            return tf.logp
        return tf.guided_logp(float(part.settings.get("cfg", 1.0)))

    def _score(self, batch: _Batch, k: int, part: Rollout, tf: TokenLogits, logp: Any, step: int) -> None:
        """Micro-batch ``k``'s rewards, group advantages, old and reference log-probs (no gradients), on the
        device of ``logp``."""
        import torch

        from irisbench.train.grpo import group_advantages, spread_rows
        from irisbench.train.rewards import ROW_KEYS, NonFiniteRewardError

        cfg, rows = self.cfg, batch.micro[k]
        stat = part
        if cfg.sc_source == "teacher-forced":
            stat = _with_stats(part, tf.self_certainty.detach().cpu().numpy(), tf.entropy.detach().cpu().numpy())
        elif cfg.sc_source == "second-pass":  # IRIS's code: one more forward just for the reward
            with torch.no_grad():
                again = self.policy.token_logits(part)
            stat = _with_stats(part, again.self_certainty.cpu().numpy(), again.entropy.cpu().numpy())
        if self.cfg.mask_forced_tokens:
            stat = copy.copy(stat)
            stat.token_mask = self._kept(part)
        try:
            context = {**self.context, "metadata": batch.metas[rows], ROW_KEYS: batch.keys[rows]}
            total, terms = self.reward.evaluate(stat, context)
        except NonFiniteRewardError as e:
            raise TrainingDivergedError(f"step {step + 1}: {e}") from None
        rewards = torch.as_tensor(total, dtype=torch.float32)
        adv, stats = group_advantages(rewards, cfg.num_generations, scale_rewards=cfg.scale_rewards)
        batch.advantages[k] = adv.to(logp.device)
        if cfg.drop_zero_spread_groups:
            batch.keep[k] = spread_rows(rewards, cfg.num_generations).to(logp.device)
        batch.zero_std += float(stats["frac_reward_zero_std"]) * (len(rewards) // cfg.num_generations)
        batch.rewards.append(rewards.double().numpy())
        for name, v in terms.items():
            batch.terms.setdefault(name, []).extend(np.asarray(v, dtype=float).tolist())
        if cfg.num_iterations > 1:
            batch.old_logp[k] = logp.detach()
        if self.ref is not None:
            with torch.no_grad():
                batch.ref_logp[k] = self._logps(self.ref.token_logits(part, uncond=self._guided), part).to(logp.device)

    def _compute_loss(self, batch: _Batch, k: int, logp: Any, mask: Any) -> tuple[Any, dict[str, Any]]:
        """Micro-batch ``k``'s term of the step's loss: ``grpo.grpo_loss`` with the step's normalisers."""
        from irisbench.train.grpo import grpo_loss

        cfg = self.cfg
        return grpo_loss(logp, batch.old_logp.get(k), batch.ref_logp.get(k), batch.advantages[k], mask,
                         beta=cfg.beta if self.ref is not None else 0.0, epsilon=cfg.epsilon,
                         epsilon_high=cfg.epsilon_high, loss_type=cfg.loss_type,
                         importance_sampling_level=cfg.importance_sampling_level, keep=batch.keep.get(k), **batch.norm)

    def step(self, step: int) -> dict[str, float]:
        """One GRPO step (sampling, rewards, ``num_iterations`` updates); returns its metrics."""
        import torch

        cfg = self.cfg
        batch = self._generate(step)
        t = {"t_sample": batch.t["t_sample"], "t_reward": 0.0, "t_forward": 0.0, "t_backward": 0.0,
             "t_optimizer": 0.0}
        gap: list[tuple[float, float, float]] = []  # per micro-batch: sum and max of |rollout - replay|, count
        for it in range(cfg.num_iterations):
            self.optimizer.zero_grad(set_to_none=True)
            totals = {"loss": 0.0, "kl": 0.0, "clip": 0.0, "kept_tokens": 0.0}
            for k, rows in enumerate(batch.micro):
                part = _slice_rollout(batch.rollout, rows)
                t1 = time.perf_counter()
                tf = self.policy.token_logits(part, uncond=self._guided)
                logp = self._logps(tf, part)
                mask = torch.as_tensor(self._kept(part), device=logp.device) & tf.mask
                if not (torch.isfinite(logp) | ~mask).all():  # no boolean indexing: one host read, no nonzero
                    raise TrainingDivergedError(f"step {step + 1}: non-finite log-probs in the teacher-forced pass")
                t["t_forward"] += time.perf_counter() - t1
                if it == 0:
                    gap.append(_logp_gap(tf.logp, part.logp, mask))
                    t2 = time.perf_counter()
                    self._score(batch, k, part, tf, logp, step)
                    t["t_reward"] += time.perf_counter() - t2
                t3 = time.perf_counter()
                loss, lm = self._compute_loss(batch, k, logp, mask)
                if not torch.isfinite(loss):
                    raise TrainingDivergedError(f"step {step + 1}: the loss is not finite")
                loss.backward()
                t["t_backward"] += time.perf_counter() - t3
                if k in batch.keep:
                    totals["kept_tokens"] += float((mask & batch.keep[k].unsqueeze(1)).sum())
                totals["loss"] += lm["loss"]
                totals["kl"] += lm.get("kl", 0.0) * lm["num_tokens"] if lm["num_tokens"] else 0.0
                totals["clip"] += lm["clip_ratio/region_mean"] * lm["num_tokens"] if lm["num_tokens"] else 0.0
            t5 = time.perf_counter()
            if cfg.drop_zero_spread_groups and cfg.loss_type == "dapo":
                self._renormalise(batch, totals)
            self.dist.sync_grads(self.params)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm))
            if not math.isfinite(grad_norm):
                raise TrainingDivergedError(f"step {step + 1}: the gradient norm is not finite")
            if it == 0:  # the on-policy pass (ratios 1, nothing clipped): the one a stall is judged on; a later
                # iteration may clip every ratio (GSPO's narrow sequence-level range) and rightly give 0
                self._first_grad_norm = grad_norm
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            t["t_optimizer"] += time.perf_counter() - t5
        self.scheduler.step()
        self.last_rollout = batch.rollout  # the trackers' images at evaluation steps
        g_sum, g_n = self.dist.all_sum([sum(x[0] for x in gap), sum(x[2] for x in gap)])
        g_max = self.dist.all_max(max(x[1] for x in gap))
        return self._metrics(batch, totals, {"lr": lr, "grad_norm": grad_norm, "logp_gap_mean": g_sum / max(g_n, 1),
                                             "logp_gap_max": g_max, **t})

    def _renormalise(self, batch: _Batch, totals: dict[str, float]) -> None:
        """``dapo`` with dropped groups divides by the step's kept tokens, known only once every micro-batch is
        scored: the terms were divided by all the step's tokens, so the gradients are scaled by all / kept."""
        (kept,) = self.dist.all_sum([totals["kept_tokens"]])
        if kept > 0:
            scale = batch.n_tok / kept
            for p in self.params:
                if p.grad is not None:
                    p.grad.mul_(scale)
            totals["loss"] *= scale

    def _metrics(self, batch: _Batch, totals: dict[str, float], extra: dict[str, float]) -> dict[str, float]:
        """The step's metrics, reduced over ranks (the loss is the sum of the micro-batch terms)."""
        g, n_seq, n_tok, rollout = self.cfg.num_generations, batch.n_seq, batch.n_tok, batch.rollout
        rewards = np.concatenate(batch.rewards)
        r_sum, zero, loss_sum, kl_sum, clip_sum = self.dist.all_sum(
            [float(rewards.sum()), batch.zero_std, totals["loss"], totals["kl"], totals["clip"]])
        mean = r_sum / n_seq
        (r_dev,) = self.dist.all_sum([float(((rewards - mean) ** 2).sum())])  # two passes: no cancellation
        metrics: dict[str, float] = {
            "reward_mean": mean,
            "reward_std": math.sqrt(r_dev / max(n_seq - 1, 1)),
            "frac_reward_zero_std": zero / (n_seq / g),
            **({"frac_groups_kept": self.dist.all_sum([float(sum(int(v.sum()) for v in batch.keep.values()))])[0]
                / n_seq} if self.cfg.drop_zero_spread_groups else {}),
            **{f"reward/{name}": self.dist.all_sum([float(np.sum(v))])[0] / n_seq for name, v in batch.terms.items()},
        }
        if "judge" in self.context:
            pairs = zip(batch.metas, rollout.images, strict=True)
            correct = sum(bool(self.context["judge"](md, im)) for md, im in pairs)
            metrics["train_correct"] = self.dist.all_sum([float(correct)])[0] / n_seq
        sc = modality_means(rollout.self_certainty, rollout.modality, rollout.token_mask)
        ent = modality_means(rollout.entropy, rollout.modality, rollout.token_mask)
        plan_len = self.dist.all_sum([float((rollout.token_mask & (rollout.modality == TEXT)).sum())])[0] / n_seq
        metrics.update({
            "loss": loss_sum, "kl": kl_sum / n_tok, "clip_ratio": clip_sum / n_tok, "lr": extra.pop("lr"),
            "grad_norm": extra.pop("grad_norm"), "sc_text": sc["text"], "sc_image": sc["image"],
            "entropy_text": ent["text"], "entropy_image": ent["image"], "plan_len": plan_len, **extra,
        })
        return metrics

    @property
    def _guided(self) -> bool:
        return self.cfg.logp_source == "guided"

    # ------------------------------------------------------------------------------------ the loop
    def train(self) -> Path:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

        from irisbench.core.progress import progress_bar
        from irisbench.train.checkpoints import trim_metrics
        from irisbench.train.tracking import Tracker

        self._setup()
        cfg = self.cfg
        metrics_path = self.out / METRICS_DIR / "metrics.jsonl"
        if self.dist.main:
            trim_metrics(metrics_path, self.start_step)
        last, zero_run = None, 0
        columns = (TextColumn("[bold]grpo"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("reward {task.fields[r]:+.3f}  sc_img {task.fields[sc]:.3f}  "
                              "{task.fields[s]:.2f} s/step"),
                   TimeRemainingColumn())
        lock = self.run.lock() if self.dist.main else contextlib.nullcontext()
        tracker = Tracker(self.report_to if self.dist.main else [], self.out, cfg.to_dict(), self.start_step)
        with lock, tracker, progress_bar(*columns, disable=not (self.progress and self.dist.main), label="grpo") as bar:
            task = bar.add_task("grpo", total=cfg.steps, completed=self.start_step, r=float("nan"),
                                sc=float("nan"), s=float("nan"))
            with open(metrics_path, "a") if self.dist.main else contextlib.nullcontext() as mf:
                if self._eval_due(self.start_step) and not eval_finished(self.out, cfg.eval_split, self.start_step):
                    tracker.log_eval(self.evaluate_checkpoint(self.start_step), self.start_step)  # finish it first
                    self._card(self.start_step)
                for step in range(self.start_step, cfg.steps):
                    t0 = time.perf_counter()
                    m = self.step(step)
                    dt = time.perf_counter() - t0
                    self.elapsed += dt
                    done = step + 1
                    rec = {"step": done, **m, "s_per_step": dt, "elapsed_s": round(self.elapsed, 3),
                           "time": time.time()}
                    if self.dist.main:
                        mf.write(json.dumps(_finite(rec)) + "\n")
                        mf.flush()
                        tracker.log_step(rec)
                    zero_run = check_stall(step, zero_run, m["frac_reward_zero_std"], self._first_grad_norm, cfg)
                    bar.update(task, completed=done, r=m["reward_mean"], sc=m["sc_image"], s=dt)
                    if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                        last = self._save(done) or last
                        self.dist.barrier()
                    if self._eval_due(done):
                        results = self.evaluate_checkpoint(done)  # every rank: prompts are sharded by rank
                        tracker.log_eval(results, done)
                        tracker.log_images(self.last_rollout.images, self.last_rollout.prompts, done)
                        self._card(done)
        if self.dist.main:
            _write_metrics_parquet(metrics_path)
        from irisbench.train.checkpoints import complete_checkpoints

        return last or complete_checkpoints(self.out)[-1][1]

    def _card(self, step: int) -> None:
        """The checkpoint of ``step``'s model card again, now with that step's evaluation (train.model_card)."""
        if self.dist.main:
            from irisbench.train.model_card import refresh_model_card

            refresh_model_card(self.out, step)

    def _eval_due(self, step: int) -> bool:
        """Whether step ``step`` (> 0) has an in-training evaluation."""
        every = self.cfg.eval_every
        return bool(every) and step > 0 and (step % every == 0 or step == self.cfg.steps)

    def evaluate_checkpoint(self, step: int) -> dict[str, Any]:
        from irisbench.evaluation.evaluate import EvalOptions, evaluate

        cfg = self.cfg
        out = eval_folder(self.out, cfg.eval_split, step)
        opts = EvalOptions(policy="in-training", suite=cfg.suite, split=cfg.eval_split, seed=cfg.seed,
                           limit=cfg.eval_prompts, images_per_prompt=cfg.eval_images_per_prompt, save_images=False)
        from irisbench.train.sharding import gathered

        was_training = self.policy.model.training
        self.policy.model.eval()
        try:
            with gathered(self.policy):
                return evaluate(opts, out, policy=_Named(self.policy, step), progress=False)
        finally:
            self.policy.model.train(was_training)


def eval_folder(run: str | Path, split: str, step: int) -> Path:
    """The folder of a training run's in-training evaluation of step ``step`` on ``split``."""
    return Path(run) / "eval" / split / f"step-{step}"


def eval_finished(run: str | Path, split: str, step: int) -> bool:
    """Whether that evaluation finished (its ``results.json`` is written last)."""
    return EvalRun(eval_folder(run, split, step)).has_results()


class _Named:
    """A policy seen by the evaluator as 'this run at step N' (stable provenance across resumes)."""

    def __init__(self, policy: Any, step: int) -> None:
        self._p, self.step = policy, step
        self.world, self.name = policy.world, policy.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._p, name)

    def describe(self) -> dict[str, Any]:
        d = dict(self._p.describe())
        d["checkpoint"] = f"step-{self.step}"
        return d


def _slice_rollout(r: Rollout, rows: slice) -> Rollout:
    """Rows ``rows`` of a rollout (per-row lists and arrays, and per-row ``extras`` lists)."""
    n = len(r)
    extras = {k: (v[rows] if isinstance(v, (list, np.ndarray)) and len(v) == n else v) for k, v in r.extras.items()}
    return Rollout(prompts=r.prompts[rows], seeds=r.seeds[rows], images=r.images[rows], plans=r.plans[rows],
                   tokens=r.tokens[rows], token_mask=r.token_mask[rows], modality=r.modality[rows],
                   logp=r.logp[rows], self_certainty=r.self_certainty[rows], entropy=r.entropy[rows],
                   settings=r.settings, extras=extras, forced=None if r.forced is None else r.forced[rows])


def _logp_gap(replay: Any, rollout_logp: np.ndarray, mask: Any) -> tuple[float, float, float]:
    """(sum, max, count) of |rollout log-prob - teacher-forced log-prob| over the loss's tokens: how far the
    sampling loop's numbers (KV-cached, batched, possibly bf16) are from the replay the update trains on."""
    import torch

    with torch.no_grad():
        diff = (replay.detach().float() - torch.as_tensor(rollout_logp, dtype=torch.float32, device=replay.device))
        diff = torch.where(mask, diff.abs(), torch.zeros((), device=replay.device))
        return float(diff.sum()), float(diff.max()) if diff.numel() else 0.0, float(mask.sum())


def _finite(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}


def _write_metrics_parquet(jsonl: Path) -> None:
    import pandas as pd

    rows = [json.loads(x) for x in jsonl.read_text().splitlines() if x.strip()]
    if rows:
        pd.DataFrame(rows).to_parquet(jsonl.with_suffix(".parquet"), index=False)


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    path = Path(run) / METRICS_DIR / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
