"""Supervised pretraining of the shapes-world base policy (``ShapesLMPolicy``) on rendered scenes.

Every step draws a fresh batch: train-split prompts (tag chosen uniformly, then a prompt of that tag),
a random scene satisfying each (``scene_for``), its rendering, image codes and plan. Sequences are
``[BOS] prompt [BOP] plan [EOP] [BOI] codes``; with probability ``uncond_prob`` a row becomes the
unconditional ``[BOS] [NULL] [BOI] codes`` (no prompt, no plan) that classifier-free guidance needs, and
with probability ``plan_dropout`` (0 for the shipped base) a conditional row keeps an empty plan.
The loss is the token-mean cross-entropy over plan words, EOP and image codes (the prompt, BOP and BOI
are given, not predicted), over the full vocabulary. AdamW (no decay on norms), linear warmup then
cosine decay to ``min_lr_ratio`` x lr (transformers' ``cosine_with_min_lr`` schedule), gradient clipping.

A batch depends only on (seed, step), so a resumed run sees exactly the data an uninterrupted one
would. Checkpoints ``out_dir/checkpoints/step-N/`` are ``ShapesLMPolicy.save`` folders plus
``optimizer.safetensors`` (AdamW moments, step counts, torch RNG) and ``trainer_state.json`` (param
groups, scheduler, config, step); each is written to a temporary folder and renamed, and a folder
without ``trainer_state.json`` is ignored, so ``kill -9`` at any moment leaves a resumable run.
No pickle anywhere. Metrics go to ``out_dir/metrics.jsonl`` (one JSON object per logged step).

Departure from the feasibility prototype (docs/shapes-world.md): the model also learns the plan
(the world's chain-of-thought), so the loss covers plan and image tokens, not image tokens only.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from irisbench.core.errors import IrisbenchError, read_json
from irisbench.train import checkpoints
from irisbench.train.checkpoints import OPTIMIZER_FILE, STATE_FILE, complete_checkpoints, load_optimizer, trim_metrics

METRICS = "metrics.jsonl"
STATE_FORMAT = "irisbench.train.pretrain-state"
IGNORE = -100
# Config fields that may change between a run and its resumption (they do not change the numbers).
RESUMABLE_CHANGES = frozenset({"checkpoint_every", "log_every", "num_threads", "keep_last"})
PRECISIONS = ("auto", "bf16", "fp32")


# Each world's shipped base recipe, as changes to the PretrainConfig defaults. The shapes world has 1,513
# distinct patches (all kept: its tokenizer is lossless); the textures world has about three times as many
# and keeps the 3,328 most frequent: the judge's verdict survived the round trip on all 1,584 test scenes
# (2,560 codes: 97.1%, 3,072: 99.0%); tests/test_world_textures.py measures it.
WORLD_RECIPES: dict[str, dict[str, Any]] = {"shapes": {}, "textures": {"max_codes": 3328, "steps": 1200}}
# The model each recipe pretrains: "shapes-lm" (``ShapesLMPolicy``, the shipped bases) or "janus" (a tiny
# transformers Janus driven by ``JanusPolicy``, ``irisbench.policies.janus_shapes``; shapes world only). The Janus
# recipe is sized to pretrain in minutes on one CPU thread: its CoT request (T2I-R1's reasoning prompt, ~150
# tokens) is read by every row, so the model is narrower and the batch smaller than the shapes LM's.
ARCHS = ("shapes-lm", "janus")
ARCH_RECIPES: dict[str, dict[str, Any]] = {
    "shapes-lm": {},
    "janus": {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 256, "batch_size": 32,
              "cot_rows": 8, "plan_weight": 0.5, "steps": 2400, "lr": 2e-3, "precision": "fp32"},
}


class PretrainError(IrisbenchError, ValueError):
    """A bad pretraining config, or an output folder that cannot be resumed."""


@dataclass
class PretrainConfig:
    """The pretraining recipe. Defaults are the recipe of the shipped base (assets/shapes-base)."""

    steps: int = 900
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    uncond_prob: float = 0.1
    # probability that a conditional row has an empty plan ([BOP] [EOP]), so that the model can also draw
    # without its plan (what the no-plan ablation samples); the shipped base was trained with 0
    plan_dropout: float = 0.0
    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    # "auto": bf16 where the hardware runs it natively, else fp32 (see resolve_precision); "bf16": bfloat16
    # autocast around the forward (fp32 weights); "fp32". The shipped base was trained with "bf16".
    precision: str = "auto"
    seed: int = 0
    split_seed: int = 0  # build_splits seed: which prompts are train
    # the prompts pretraining draws: "all" (the whole language, every split's texts, as a real model has met
    # most phrasings before RL) or "train" (the RL-training texts only; world v1's bases were made so)
    prompts: str = "all"
    tokenizer_scenes: int = 4000
    max_codes: int = 2048
    checkpoint_every: int = 100
    log_every: int = 10
    # 1 thread: on this shared 2-core machine, 2 threads spin-wait on each other under load (measured
    # 3-4x slower per step at load average ~9); on an idle machine 2 threads are ~1.8x faster.
    num_threads: int = 1
    keep_last: int | None = None  # keep only the newest N checkpoints (None: keep all)
    # "shapes" (flat colours, lossless tokenizer) or "textures" (per-patch shading, lossy tokenizer;
    # irisbench.world.textures); ``for_world`` gives each world's shipped recipe
    world: str = "shapes"
    # the model pretrained (ARCHS): "shapes-lm" or "janus" (``ARCH_RECIPES`` gives each one's shipped recipe)
    arch: str = "shapes-lm"
    # janus: rows per batch whose CoT is trained too (None: every row); the image part trains on every row
    cot_rows: int | None = None
    # janus: the plan's share of the loss, ``plan_weight * mean(plan nll) + (1 - plan_weight) * mean(image nll)``
    # (None: one token mean over both, where the few plan tokens of the cot_rows rows weigh ~4% against 64 image
    # codes on every row and the CoT hardly learns to read its prompt; docs/janus.md has the measurements)
    plan_weight: float | None = None

    @classmethod
    def for_world(cls, world: str, overrides: dict[str, Any] | None = None, arch: str = "shapes-lm"
                  ) -> PretrainConfig:
        """The shipped recipe of ``world`` and ``arch`` with ``overrides`` on top (``WORLD_RECIPES``,
        ``ARCH_RECIPES``)."""
        from irisbench.world.textures import check_world

        check_world(world, "--world")
        if arch not in ARCHS:
            raise PretrainError(f"--arch must be one of {', '.join(ARCHS)}, got {arch!r}")
        return cls.from_dict({**WORLD_RECIPES[world], **ARCH_RECIPES[arch], "world": world, "arch": arch,
                              **(overrides or {})})

    def check(self) -> None:
        positive = ("steps", "batch_size", "num_layers", "num_heads", "hidden_size", "intermediate_size",
                    "tokenizer_scenes", "max_codes", "checkpoint_every", "log_every", "num_threads")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise PretrainError(f"PretrainConfig.{name} must be an int >= 1, got {v!r}")
        if self.warmup_steps < 0:
            raise PretrainError(f"PretrainConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not self.lr > 0:
            raise PretrainError(f"PretrainConfig.lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise PretrainError(f"PretrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0 <= self.uncond_prob < 1:
            raise PretrainError(f"PretrainConfig.uncond_prob must be in [0, 1), got {self.uncond_prob}")
        if not 0 <= self.plan_dropout <= 1:
            raise PretrainError(f"PretrainConfig.plan_dropout must be in [0, 1], got {self.plan_dropout}")
        if self.hidden_size % self.num_heads:
            raise PretrainError(f"PretrainConfig.hidden_size ({self.hidden_size}) must be divisible by "
                                f"num_heads ({self.num_heads})")
        if self.prompts not in ("all", "train"):
            raise PretrainError(f"PretrainConfig.prompts must be 'all' or 'train', got {self.prompts!r}")
        if self.precision not in PRECISIONS:
            raise PretrainError(f"PretrainConfig.precision must be one of {', '.join(PRECISIONS)}, "
                                f"got {self.precision!r}")
        from irisbench.world.textures import WORLDS

        if self.world not in WORLDS:
            raise PretrainError(f"PretrainConfig.world must be one of {', '.join(WORLDS)}, got {self.world!r}")
        if self.arch not in ARCHS:
            raise PretrainError(f"PretrainConfig.arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.arch == "janus" and self.world != "shapes":
            raise PretrainError(f"PretrainConfig.arch 'janus' pretrains on the shapes world only, got world "
                                f"{self.world!r}")
        if self.cot_rows is not None and (not isinstance(self.cot_rows, int) or self.cot_rows < 0):
            raise PretrainError(f"PretrainConfig.cot_rows must be an int >= 0 or None, got {self.cot_rows!r}")
        if self.plan_weight is not None:
            if self.arch != "janus":
                raise PretrainError("PretrainConfig.plan_weight applies to arch 'janus' only (the shapes LM's loss "
                                    "is one token mean)")
            if isinstance(self.plan_weight, bool) or not isinstance(self.plan_weight, (int, float)) \
                    or not 0 <= self.plan_weight <= 1:
                raise PretrainError(f"PretrainConfig.plan_weight must be a number in [0, 1] or None, got "
                                    f"{self.plan_weight!r}")
        if self.keep_last is not None and self.keep_last < 1:
            raise PretrainError(f"PretrainConfig.keep_last must be >= 1 or None, got {self.keep_last}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PretrainError(f"unknown PretrainConfig field(s): {', '.join(unknown)}")
        return cls(**d)


def build_scheduler(optimizer: Any, cfg: PretrainConfig) -> Any:
    """``transformers.get_scheduler("cosine_with_min_lr")``: step s of the warmup at ``s / warmup_steps`` of
    ``cfg.lr`` (transformers' warmup, from 0), then a half cosine from lr to ``min_lr_ratio`` x lr at ``steps``."""
    from transformers import get_scheduler

    return get_scheduler("cosine_with_min_lr", optimizer, num_warmup_steps=cfg.warmup_steps,
                         num_training_steps=cfg.steps, scheduler_specific_kwargs={"min_lr_rate": cfg.min_lr_ratio})


def resolve_precision(requested: str, device: str = "cpu") -> tuple[str, str]:
    """The precision a run uses for ``requested`` on ``device`` ("cpu", "cuda", "cuda:1", ...), and why.

    Rule for "auto": on CUDA, bf16 when ``torch.cuda.is_bf16_supported()``; on the CPU, bf16 only when
    ``irisbench.core.devices.cpu_bf16_native()``; fp32 otherwise. An explicit "bf16" or "fp32" is kept as asked.
    """
    import torch

    if requested not in PRECISIONS:
        raise PretrainError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return requested, f"precision {requested!r} was asked for"
    if str(device).startswith("cuda"):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16", "auto: the CUDA device supports bf16"
        return "fp32", "auto: the CUDA device does not support bf16"
    from irisbench.core.devices import cpu_bf16_native

    native, why = cpu_bf16_native()
    return ("bf16" if native else "fp32"), f"auto: {why}"


class BatchMaker:
    """Fresh rendered training batches, a pure function of (seed, step).

    ``draws`` is what every architecture trains on (prompts, scenes, image codes, which rows are unconditional
    or without plan); ``sequences`` lays it out for the shapes LM (``vocab``), ``irisbench.policies.janus_shapes``
    for Janus (``vocab=None``).
    """

    def __init__(self, cfg: PretrainConfig, vocab: Any, image_tokenizer: Any) -> None:
        from irisbench.world.prompts import all_prompts, build_splits
        from irisbench.world.vocab import TAGS

        self.cfg, self.vocab, self.tok = cfg, vocab, image_tokenizer
        if cfg.prompts == "all":
            train = [md for tag in TAGS for md in all_prompts(tag)]
        else:
            train = build_splits(cfg.split_seed)["train"]
        self.by_tag = [[md for md in train if md["tag"] == tag] for tag in TAGS]
        self.by_tag = [group for group in self.by_tag if group]
        self.prompt_ids = {md["prompt"]: vocab.encode_prompt(md["prompt"]) for md in train} if vocab else {}

    def draws(self, step: int) -> tuple[list[dict[str, Any]], list[Any], np.ndarray, np.ndarray, np.ndarray]:
        """(prompt metadata, scenes, image codes (B, 64), unconditional rows, rows without plan) of ``step``."""
        from irisbench.world.sampler import scene_for
        from irisbench.world.textures import render_world

        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed & 0xFFFFFFFF, 0x5EED, step])
        tags = rng.integers(len(self.by_tag), size=cfg.batch_size)
        mds = [self.by_tag[t][int(rng.integers(len(self.by_tag[t])))] for t in tags]
        scenes = [scene_for(md, rng) for md in mds]
        shading = np.random.default_rng([cfg.seed & 0xFFFFFFFF, 0x7E27, step])  # unused in the shapes world
        codes = self.tok.encode(render_world(scenes, cfg.world, shading))
        uncond = rng.random(cfg.batch_size) < cfg.uncond_prob
        # drawn only when used, so that plan_dropout=0 keeps the shipped recipe's batches bit for bit
        no_plan = rng.random(cfg.batch_size) < cfg.plan_dropout if cfg.plan_dropout else np.zeros(cfg.batch_size, bool)
        return mds, scenes, codes, uncond, no_plan

    def sequences(self, step: int) -> tuple[list[list[int]], list[list[int]]]:
        """(token ids, target mask as 0/1) per row of the batch of ``step``."""
        from irisbench.world.plan import plan_text

        v = self.vocab
        mds, scenes, codes, uncond, no_plan = self.draws(step)
        codes = codes + v.image_offset
        seqs, targets = [], []
        for md, scene, c, u, bare in zip(mds, scenes, codes.tolist(), uncond, no_plan, strict=True):
            if u:
                head, tgt = [v.bos, v.null, v.boi], [0, 0, 0]
            else:
                prompt = self.prompt_ids[md["prompt"]]
                plan = [v.eop] if bare else [*v.encode_plan(plan_text(scene)), v.eop]
                head = [v.bos, *prompt, v.bop, *plan, v.boi]
                tgt = [0] * (len(prompt) + 2) + [1] * len(plan) + [0]
            seqs.append(head + c)
            targets.append(tgt + [1] * len(c))
        return seqs, targets

    def tensors(self, step: int) -> dict[str, Any]:
        import torch

        seqs, targets = self.sequences(step)
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.vocab.pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
        is_image = torch.zeros((len(seqs), width), dtype=torch.bool)
        for i, (s, t) in enumerate(zip(seqs, targets, strict=True)):
            st = torch.as_tensor(s)
            ids[i, : len(s)] = st
            mask[i, : len(s)] = 1
            labels[i, : len(s)] = torch.where(torch.as_tensor(t, dtype=torch.bool), st, IGNORE)
            is_image[i, : len(s)] = st >= self.vocab.image_offset
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "is_image": is_image}


def batch_loss(model: Any, batch: dict[str, Any], precision: str = "fp32") -> tuple[Any, dict[str, float]]:
    """Token-mean cross-entropy over targets; also the plan-only and image-only means (floats)."""
    import torch
    import torch.nn.functional as F

    if precision not in ("bf16", "fp32"):
        raise PretrainError(f"batch_loss needs a resolved precision ('bf16' or 'fp32'), got {precision!r}")
    dev = next(model.parameters()).device
    batch = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    per_tok = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels, ignore_index=IGNORE,
                              reduction="none")
    valid = labels != IGNORE
    img = valid & batch["is_image"][:, 1:]
    plan = valid & ~batch["is_image"][:, 1:]
    loss = per_tok[valid].mean()
    per_tok_d = per_tok.detach()
    parts = {"loss_image": float(per_tok_d[img].mean()) if img.any() else float("nan"),
             "loss_plan": float(per_tok_d[plan].mean()) if plan.any() else float("nan")}
    return loss, parts


# ---------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(out_dir: Path, step: int, policy: Any, optimizer: Any, scheduler: Any,
                    cfg: PretrainConfig, extra: dict[str, Any]) -> Path:
    """Write ``checkpoints/step-{step}`` atomically (see ``irisbench.train.checkpoints``)."""
    return checkpoints.save_checkpoint(out_dir, step, policy, optimizer, scheduler, {"config": asdict(cfg), **extra},
                                       keep_last=cfg.keep_last, fmt=STATE_FORMAT)


def _check_resume_config(saved: dict[str, Any], cfg: PretrainConfig, where: Path) -> None:
    current = asdict(cfg)
    defaults = {"arch": "shapes-lm"}  # runs saved before the field existed
    diff = [k for k in current if k not in RESUMABLE_CHANGES and saved.get(k, defaults.get(k)) != current[k]]
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in diff)
        raise PretrainError(f"{where}: cannot resume with a different recipe ({detail}); use the saved "
                            "config or another output folder")


# ---------------------------------------------------------------------------------------- the loop
def run_pretrain(cfg: PretrainConfig, out_dir: str | Path, *, resume: bool = True, progress: bool = True,
                 device: str | None = None) -> Path:
    """Train (or resume training) the shapes base policy; returns the final checkpoint folder.

    ``device``: where the model trains (``irisbench.core.devices.resolve_device``: ``None`` is cuda when
    available); batches are drawn on the CPU and moved there. Recorded in each checkpoint's state.

    ``resume=True`` continues from the newest complete checkpoint in ``out_dir`` (the recipe must match,
    except ``RESUMABLE_CHANGES``); ``resume=False`` refuses a folder that already holds checkpoints.
    """
    import torch
    from safetensors.torch import load_file

    from irisbench.core.devices import resolve_device
    from irisbench.policies.janus_shapes import JanusShapesBatches, JanusShapesPolicy
    from irisbench.policies.janus_shapes import create as create_janus_shapes
    from irisbench.policies.shapes_lm import ShapesLMPolicy
    from irisbench.world.tokenizer import fit_patch_tokenizer

    cfg.check()
    device = resolve_device(device)  # one line, before the output folder is made, if unusable
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.num_threads)
    existing = complete_checkpoints(out_dir)
    if existing and not resume:
        raise PretrainError(f"{out_dir} already holds checkpoints ({existing[-1][1].name}); resume or choose "
                            "another output folder")
    start_step, elapsed, cpu = 0, 0.0, 0.0
    if existing:
        start_step, ckpt = existing[-1]
        state = read_json(ckpt / STATE_FILE, PretrainError, "checkpoint state")
        _check_resume_config(state["config"], cfg, ckpt / STATE_FILE)
        policy = ShapesLMPolicy.load(ckpt, device=device) if cfg.arch == "shapes-lm" else \
            JanusShapesPolicy.load(ckpt, device=device)
        elapsed = float(state.get("elapsed_s", 0.0))
        cpu = float(state.get("cpu_s", 0.0))
    else:
        tok = fit_patch_tokenizer(n_scenes=cfg.tokenizer_scenes, seed=cfg.seed, max_codes=cfg.max_codes,
                                  world=cfg.world)
        make = ShapesLMPolicy.create if cfg.arch == "shapes-lm" else create_janus_shapes
        policy = make(tok, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                      intermediate_size=cfg.intermediate_size, seed=cfg.seed)
        policy.model.to(device)
    precision, precision_reason = resolve_precision(cfg.precision, str(device))
    chosen = {"precision": precision, "reason": precision_reason}
    (out_dir / "pretrain_config.json").write_text(
        json.dumps({**asdict(cfg), "precision_used": chosen}, indent=1) + "\n")
    model = policy.model
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    scheduler = build_scheduler(optimizer, cfg)
    if existing:
        tensors = load_file(str(ckpt / OPTIMIZER_FILE))
        load_optimizer(optimizer, tensors, state["param_groups"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(tensors["rng.torch"])
    else:
        torch.manual_seed(cfg.seed)
    metrics_path = out_dir / METRICS
    trim_metrics(metrics_path, start_step)
    if cfg.arch == "janus":
        step_loss = JanusShapesBatches(BatchMaker(cfg, None, policy.image_tokenizer), policy).loss
    else:
        maker = BatchMaker(cfg, policy.vocab, policy.image_tokenizer)

        def step_loss(step: int, precision: str) -> tuple[Any, dict[str, float]]:
            return batch_loss(model, maker.tensors(step), precision)

    last = existing[-1][1] if existing else None
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from irisbench.core.progress import progress_bar

    columns = (TextColumn("[bold]pretrain"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.3f}  lr {task.fields[lr]:.2e}  {task.fields[sps]:.2f} s/step"),
               TimeRemainingColumn())
    window: list[float] = []
    with progress_bar(*columns, disable=not progress, label="pretrain") as bar, open(metrics_path, "a") as mf:
        task = bar.add_task("pretrain", total=cfg.steps, completed=start_step, loss=float("nan"),
                            lr=scheduler.get_last_lr()[0], sps=float("nan"))
        for step in range(start_step, cfg.steps):
            t0, c0 = time.perf_counter(), time.process_time()
            loss, parts = step_loss(step, precision)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            dt = time.perf_counter() - t0
            elapsed += dt
            cpu += time.process_time() - c0
            window = (window + [dt])[-20:]
            done = step + 1
            loss_value = float(loss.detach())
            bar.update(task, completed=done, loss=loss_value, lr=lr, sps=sum(window) / len(window))
            if done % cfg.log_every == 0 or done == cfg.steps:
                rec = {"step": done, "loss": loss_value, **parts, "lr": lr, "grad_norm": grad_norm,
                       "s_per_step": dt, "elapsed_s": round(elapsed, 3), "cpu_s": round(cpu, 3),
                       "time": time.time()}
                mf.write(json.dumps(rec) + "\n")
                mf.flush()
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                model.eval()
                last = save_checkpoint(out_dir, done, policy, optimizer, scheduler, cfg,
                                       {"elapsed_s": elapsed, "cpu_s": cpu, "loss": loss_value, "device": device,
                                        "precision_used": chosen})
                model.train()
    model.eval()
    if last is None:  # nothing to do: already trained to cfg.steps
        last = existing[-1][1]
    return last


__all__ = ["ARCHS", "ARCH_RECIPES", "PRECISIONS", "WORLD_RECIPES", "BatchMaker", "PretrainConfig", "PretrainError",
           "batch_loss", "build_scheduler", "complete_checkpoints", "resolve_precision", "run_pretrain",
           "save_checkpoint"]
