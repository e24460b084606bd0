"""The GRPO loop for text-to-image policies: rollouts -> rewards -> group advantages -> update.

One step: draw ``prompts_per_step`` train prompts (a tag uniformly, then a prompt of it; a pure function
of (seed, step)), sample ``num_generations`` rollouts of each with per-row seeds derived from (seed,
step, prompt, sample), score them with the configured reward, normalise rewards within each group,
and take ``num_iterations`` clipped-ratio policy-gradient updates (trl's GRPO maths from
``irisbench.grpo``), optionally with a k3 KL penalty against a frozen copy of the starting policy.

Where this departs from IRIS's released code (every choice is a recorded config field):

- ``sc_source``: the intrinsic reward's self-certainty comes, by default, from the same teacher-forced
  pass that gives the policy-gradient log-probs; IRIS runs a second forward just for it
  (``second-pass``), and the sampling loop's own statistics (``sampling``) are free. With one update per
  batch all three are the same numbers up to float round-off.
- ``logp_source``: log-probs of image tokens from the conditional branch (IRIS, T2I-R1) or from the
  CFG-guided distribution that was actually sampled (AR-GRPO).
- Losses are normalised by *global* counts (tokens or sequences over the whole step, every rank and
  micro-batch), so gradient accumulation and data parallelism give the same update as one big batch.

Data parallel: under ``torchrun`` each rank takes whole groups (``prompts_per_step`` must divide by the
world size), rewards stay local (advantages are per group), metrics are all-reduced, and gradients are
summed with ``all_reduce`` (``parallel: ddp``) or reduce-scattered onto sharded parameters and AdamW
state (``parallel: fsdp``, ``irisbench.sharding``). In-training evaluation shards its prompts over the
ranks. The same code runs as 2 CPU processes with gloo in the tests.

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
from pathlib import Path
from typing import Any

import numpy as np

from irisbench.distributed import Dist
from irisbench.policies.base import IMAGE, TEXT, Rollout, derive_seed
from irisbench.train_config import TrainConfig

METRICS_DIR = "train"
TIMING_KEYS = ("s_per_step", "t_sample", "t_reward", "t_forward", "t_backward", "t_optimizer", "elapsed_s", "time")


class TrainingDivergedError(RuntimeError):
    """Non-finite logits, rewards or loss: the run stops; the last good checkpoint is kept."""


def lr_lambda(cfg: TrainConfig):
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.lr_scheduler == "constant":
            return 1.0
        progress = min((step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1), 1.0)
        if cfg.lr_scheduler == "linear":
            return 1.0 - progress
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


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


def _modality_means(r: Rollout, values: np.ndarray) -> dict[str, float]:
    out = {}
    for name, code in (("text", TEXT), ("image", IMAGE)):
        m = r.token_mask & (r.modality == code)
        out[name] = float(values[m].mean()) if m.any() else float("nan")
    return out


class GRPOTrainer:
    """Drives one GRPO run into a run folder; ``train()`` resumes if the folder has checkpoints."""

    def __init__(self, cfg: TrainConfig, out: str | Path, *, progress: bool = True,
                 allow_config_change: bool = False, policy: Any = None, device: str | None = None) -> None:
        import torch

        cfg.check()
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        # the device the policy is loaded on (irisbench.devices; under a launcher cuda:LOCAL_RANK); recorded
        # in env.json, not in the config, so that a run may resume on another device
        self.dist = Dist.from_env(device)
        self.device = self.dist.device
        if cfg.prompts_per_step % self.dist.world_size:
            raise ValueError(f"prompts_per_step={cfg.prompts_per_step} must be divisible by the number of "
                             f"processes ({self.dist.world_size}): each rank takes whole groups")
        torch.set_num_threads(cfg.num_threads)
        self.allow_config_change = allow_config_change
        self._policy = policy

    # ------------------------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        import torch

        from irisbench.devices import device_record
        from irisbench.policies import load_policy
        from irisbench.rewards import build_reward
        from irisbench.runs import RunDir, env_info
        from irisbench.suites import load_suite, resolve_prompts

        cfg = self.cfg
        if self.dist.main:
            env = {**env_info(), **device_record(self.device)}
            self.run = RunDir.open_or_create(self.out, kind="train", config=cfg.to_dict(), env=env,
                                             allow_config_change=self.allow_config_change)
        self.dist.barrier()
        if not self.dist.main:
            from irisbench.runs import RunDir

            self.run = RunDir.open(self.out)
        from irisbench.checkpoints import complete_checkpoints

        ckpts = complete_checkpoints(self.out)
        self.start_step = ckpts[-1][0] if ckpts else 0
        if ckpts:
            self.policy = load_policy(str(ckpts[-1][1]), device=self.device)
        else:
            self.policy = self._policy if self._policy is not None else \
                load_policy(cfg.policy, cfg.model, device=self.device, **cfg.policy_options)
        self.world = self.policy.world
        self.items, self.prompt_prov = self._training_prompts(load_suite(cfg.suite), resolve_prompts)
        self.reward = build_reward(cfg.reward, weights=cfg.reward_weights, options=cfg.reward_options or None)
        self.context: dict[str, Any] = {}
        if self.world == "shapes":
            from irisbench.protocols.geneval import judge
            from irisbench.world.detector import detect

            self.context["judge"] = lambda meta, image: judge(meta, detect(image)).correct
        model = self.policy.model
        for name, p in model.named_parameters():
            if any(pat in name for pat in cfg.freeze):
                p.requires_grad_(False)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError(f"freeze patterns {cfg.freeze} froze every parameter")
        self.ref = None
        if cfg.beta > 0:
            self.ref = copy.deepcopy(self.policy) if not ckpts else self._load_reference()
            self.ref.model.eval().requires_grad_(False)
        self._ref_saved = (self.out / "checkpoints" / "reference").is_dir()
        if cfg.parallel == "fsdp":
            from irisbench.sharding import shard

            for policy in (self.policy, self.ref):
                if policy is not None:
                    shard(policy)
            self.params = [p for p in model.parameters() if p.requires_grad]  # now sharded
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                           weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.elapsed = 0.0
        if ckpts:
            self._restore(ckpts[-1][1])
        (self.out / METRICS_DIR).mkdir(exist_ok=True)

    def _training_prompts(self, suite: Any, resolve_prompts: Any) -> tuple[list[dict], dict[str, Any]]:
        """The shapes world's train split, or the user's prompt file (required for open-world models).

        A ``.txt`` file holds one prompt per line (as T2I-R1's training mix); anything else is read as
        GenEval-format metadata.
        """
        from irisbench.train_config import ConfigError

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
        from irisbench.checkpoints import restore_optimizer

        loader = None
        if self.cfg.parallel == "fsdp":
            from irisbench.sharding import load_full_optimizer_tensors

            def loader(tensors: dict[str, Any], groups: list[dict[str, Any]]) -> None:
                load_full_optimizer_tensors(self.policy, self.optimizer, tensors, groups)

        state = restore_optimizer(ckpt, self.optimizer, self.scheduler, loader=loader)
        self.elapsed = float(state.get("elapsed_s", 0.0))

    def _save(self, step: int) -> Path | None:
        """Every rank calls it (sharded state is gathered onto rank 0); rank 0 writes ``step-N``."""
        from irisbench.checkpoints import CHECKPOINTS, save_checkpoint
        from irisbench.sharding import full_model_state, full_optimizer_tensors, save_policy

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
                               keep_last=self.cfg.keep_last, fmt="irisbench.grpo-state",
                               model_state=model_state, optimizer_state=optimizer_state)

    # ------------------------------------------------------------------------------------ one step
    def _rollout(self, step: int) -> tuple[Rollout, list[dict]]:
        cfg, g = self.cfg, self.cfg.num_generations
        idx = step_prompts(self.items, cfg, step)
        per_rank = len(idx) // self.dist.world_size
        mine = list(enumerate(idx))[self.dist.rank * per_rank:(self.dist.rank + 1) * per_rank]
        seeds = [derive_seed(cfg.seed, "grpo", step, k, j) for k, _ in mine for j in range(g)]
        import torch

        from irisbench.sharding import gathered

        with torch.no_grad(), gathered(self.policy):  # ranks sample different lengths: no collectives inside
            rollout = self.policy.sample([self.items[i]["prompt"] for _, i in mine], n=g, seed=seeds,
                                         cfg=cfg.cfg, temperature=cfg.temperature, top_k=cfg.top_k)
        return rollout, [self.items[i] for _, i in mine for _ in range(g)]

    def _logps(self, rollout: Rollout, out: dict[str, Any]) -> Any:
        """Per-token log-probs for the policy gradient: conditional, or CFG-guided on image tokens."""
        import torch

        if self.cfg.logp_source == "conditional":
            return out["logp"]
        w = float(rollout.settings.get("cfg", 1.0))
        guided = out["image_logits_uncond"] + w * (out["image_logits"] - out["image_logits_uncond"])
        idx = out["tokens"].clamp(0, guided.shape[-1] - 1)  # only image positions are kept below
        img_lp = torch.log_softmax(guided, -1).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
        return torch.where(out["modality"] == IMAGE, img_lp, out["logp"])

    def _rewards(self, part: Rollout, out: dict[str, Any], metas: list[dict], step: int) -> tuple[Any, dict]:
        """Rewards of one micro-batch (whole groups), with self-certainty from ``sc_source``."""
        import torch

        from irisbench.rewards import NonFiniteRewardError

        stat = part
        if self.cfg.sc_source == "teacher-forced":
            stat = _with_stats(part, out["self_certainty"].detach().cpu().numpy(),
                               out["entropy"].detach().cpu().numpy())
        elif self.cfg.sc_source == "second-pass":  # IRIS's code: one more forward just for the reward
            with torch.no_grad():
                again = self.policy.token_logits(part)
            stat = _with_stats(part, again["self_certainty"].cpu().numpy(), again["entropy"].cpu().numpy())
        try:
            total, terms = self.reward.evaluate(stat, {**self.context, "metadata": metas})
        except NonFiniteRewardError as e:
            raise TrainingDivergedError(f"step {step + 1}: {e}") from None
        return torch.as_tensor(total, dtype=torch.float32), terms

    def step(self, step: int) -> dict[str, float]:
        """One GRPO step (sampling, rewards, ``num_iterations`` updates); returns its metrics."""
        import torch

        from irisbench.grpo import clipped_objective, group_advantages, k3_kl

        cfg, g = self.cfg, self.cfg.num_generations
        t0 = time.perf_counter()
        rollout, metas = self._rollout(step)
        t_sample = time.perf_counter() - t0
        b = len(rollout)
        mask = torch.as_tensor(rollout.token_mask)
        lengths = mask.sum(1).clamp(min=1)
        # global normalisers (all ranks, all micro-batches): accumulation and DP equal one big batch
        n_tok, n_seq = self.dist.all_sum([float(mask.sum()), float(b)])
        max_len = float(mask.shape[1])
        guided = cfg.logp_source == "guided"
        groups_per_micro = max((b // g) // cfg.gradient_accumulation_steps, 1)
        micro_rows = [slice(s, s + groups_per_micro * g) for s in range(0, b, groups_per_micro * g)]

        t = {"t_reward": 0.0, "t_forward": 0.0, "t_backward": 0.0, "t_optimizer": 0.0}
        old_logp: dict[int, Any] = {}
        advantages: dict[int, Any] = {}
        rewards_all: list[Any] = []
        terms_all: dict[str, list[float]] = {}
        zero_std = 0.0
        totals = {"loss": 0.0, "kl": 0.0, "clip": 0.0}
        for it in range(cfg.num_iterations):
            self.optimizer.zero_grad(set_to_none=True)
            totals = {"loss": 0.0, "kl": 0.0, "clip": 0.0}
            for k, rows in enumerate(micro_rows):
                part = _slice_rollout(rollout, rows)
                t1 = time.perf_counter()
                out = self.policy.token_logits(part, uncond=guided)
                logp = self._logps(part, out)
                m = out["mask"]
                if not torch.isfinite(logp[m]).all():
                    raise TrainingDivergedError(f"step {step + 1}: non-finite log-probs in the teacher-forced pass")
                t["t_forward"] += time.perf_counter() - t1
                if it == 0:
                    t2 = time.perf_counter()
                    rewards, terms = self._rewards(part, out, metas[rows], step)
                    advantages[k], stats = group_advantages(rewards, g, scale_rewards=cfg.scale_rewards)
                    zero_std += float(stats["frac_reward_zero_std"]) * (len(rewards) // g)
                    rewards_all.append(rewards)
                    for name, v in terms.items():
                        terms_all.setdefault(name, []).extend(np.asarray(v, dtype=float).tolist())
                    old_logp[k] = logp.detach()
                    t["t_reward"] += time.perf_counter() - t2
                t3 = time.perf_counter()
                adv = advantages[k].unsqueeze(1).expand_as(logp)
                per_tok, clip_stats = clipped_objective(logp, old_logp[k], adv, epsilon=cfg.epsilon,
                                                        epsilon_high=cfg.epsilon_high, mask=m)
                kl = torch.zeros_like(per_tok)
                if self.ref is not None:
                    with torch.no_grad():
                        ref_lp = self._logps(part, self.ref.token_logits(part, uncond=guided))
                    kl = torch.where(m, k3_kl(logp, ref_lp), kl)
                    per_tok = per_tok + cfg.beta * kl
                per_tok = torch.where(m, per_tok, torch.zeros_like(per_tok))
                if cfg.loss_type == "bnpo":
                    loss = per_tok.sum() / n_tok
                elif cfg.loss_type == "grpo":
                    loss = (per_tok.sum(1) / lengths[rows]).sum() / n_seq
                else:  # dr_grpo
                    loss = per_tok.sum() / (n_seq * max_len)
                if not torch.isfinite(loss):
                    raise TrainingDivergedError(f"step {step + 1}: the loss is not finite")
                loss.backward()
                t["t_backward"] += time.perf_counter() - t3
                totals["loss"] += float(loss.detach())
                totals["kl"] += float(kl.sum().detach())
                totals["clip"] += float(clip_stats.get("clip_ratio/region_mean", 0.0)) * float(m.sum())
            t5 = time.perf_counter()
            self.dist.sync_grads(self.params)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm))
            if not math.isfinite(grad_norm):
                raise TrainingDivergedError(f"step {step + 1}: the gradient norm is not finite")
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            t["t_optimizer"] += time.perf_counter() - t5
        self.scheduler.step()

        rewards = torch.cat(rewards_all).double()
        r_sum, zero, loss_sum, kl_sum, clip_sum = self.dist.all_sum(
            [float(rewards.sum()), zero_std, totals["loss"], totals["kl"], totals["clip"]])
        mean = r_sum / n_seq
        (r_dev,) = self.dist.all_sum([float(((rewards - mean) ** 2).sum())])  # two passes: no cancellation
        metrics: dict[str, float] = {
            "reward_mean": mean,
            "reward_std": math.sqrt(r_dev / max(n_seq - 1, 1)),
            "frac_reward_zero_std": zero / (n_seq / g),
            **{f"reward/{name}": self.dist.all_sum([float(np.sum(v))])[0] / n_seq for name, v in terms_all.items()},
        }
        if "judge" in self.context:
            correct = sum(bool(self.context["judge"](md, im)) for md, im in zip(metas, rollout.images, strict=True))
            metrics["train_correct"] = self.dist.all_sum([float(correct)])[0] / n_seq
        sc = _modality_means(rollout, rollout.self_certainty)
        ent = _modality_means(rollout, rollout.entropy)
        plan_len = self.dist.all_sum([float((rollout.token_mask & (rollout.modality == TEXT)).sum())])[0] / n_seq
        metrics.update({
            "loss": loss_sum, "kl": kl_sum / n_tok, "clip_ratio": clip_sum / n_tok, "lr": lr, "grad_norm": grad_norm,
            "sc_text": sc["text"], "sc_image": sc["image"], "entropy_text": ent["text"], "entropy_image": ent["image"],
            "plan_len": plan_len, "t_sample": t_sample, **t,
        })
        return metrics

    # ------------------------------------------------------------------------------------ the loop
    def train(self) -> Path:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from irisbench.checkpoints import trim_metrics

        self._setup()
        cfg = self.cfg
        metrics_path = self.out / METRICS_DIR / "metrics.jsonl"
        if self.dist.main:
            trim_metrics(metrics_path, self.start_step)
        last = None
        columns = (TextColumn("[bold]grpo"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("reward {task.fields[r]:+.3f}  sc_img {task.fields[sc]:.3f}  "
                              "{task.fields[s]:.2f} s/step"),
                   TimeRemainingColumn())
        lock = self.run.lock() if self.dist.main else contextlib.nullcontext()
        with lock, Progress(*columns, disable=not (self.progress and self.dist.main)) as bar:
            task = bar.add_task("grpo", total=cfg.steps, completed=self.start_step, r=float("nan"),
                                sc=float("nan"), s=float("nan"))
            with open(metrics_path, "a") if self.dist.main else contextlib.nullcontext() as mf:
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
                    bar.update(task, completed=done, r=m["reward_mean"], sc=m["sc_image"], s=dt)
                    if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                        last = self._save(done) or last
                        self.dist.barrier()
                    if cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
                        self.evaluate_checkpoint(done)  # every rank: prompts are sharded by rank
        if self.dist.main:
            _write_metrics_parquet(metrics_path)
        from irisbench.checkpoints import complete_checkpoints

        return last or complete_checkpoints(self.out)[-1][1]

    def evaluate_checkpoint(self, step: int) -> dict[str, Any]:
        from irisbench.evaluate import EvalOptions, evaluate

        cfg = self.cfg
        out = self.out / "eval" / cfg.eval_split / f"step-{step}"
        opts = EvalOptions(policy="in-training", suite=cfg.suite, split=cfg.eval_split, seed=cfg.seed,
                           limit=cfg.eval_prompts, images_per_prompt=cfg.eval_images_per_prompt, save_images=False)
        from irisbench.sharding import gathered

        was_training = self.policy.model.training
        self.policy.model.eval()
        try:
            with gathered(self.policy):
                return evaluate(opts, out, policy=_Named(self.policy, step), progress=False)
        finally:
            self.policy.model.train(was_training)


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
                   settings=r.settings, extras=extras)


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
