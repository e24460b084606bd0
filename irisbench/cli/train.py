"""The training commands: ``pretrain``, ``pretrain-clip``, ``train`` and the ``experiment`` that trains,
evaluates and reports every method.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.table import Table

from irisbench.cli.options import (
    ConfigOptions,
    DeviceOption,
    PolicyOptions,
    ProgressOption,
    SamplingOptions,
    SeedOption,
    command,
    option,
)
from irisbench.cli.shared import claim_out, console, default_out, guard
from irisbench.core import distributed
from irisbench.core.errors import UsageError, parse_key_value, parse_named


@dataclass(kw_only=True)
class PretrainArgs(ProgressOption, DeviceOption):
    out: Path | None = option(None, "Output folder (default: a new folder under results/runs/); re-running resumes.")
    set_: list[str] = option([], "Override a PretrainConfig field: key=value (dotted keys reach into mapping "
                                 "fields).", "--set", "-s")
    world: str = option("shapes", "shapes (flat colours, lossless tokenizer) or textures (per-patch shading, lossy "
                                  "tokenizer): starts from that world's shipped recipe.")
    threads: int | None = option(None, "torch threads (default: the recipe's 1, the fastest on a busy machine; on a "
                                       "quiet machine use its cores). May change on resume.")
    arch: str = option("shapes-lm", "shapes-lm (the shipped bases' Llama) or janus (a tiny transformers Janus with "
                                    "CoT and CFG: the janus-shapes policy); its recipe.")


@command("pretrain", PretrainArgs)
def pretrain_cmd(args: PretrainArgs) -> None:
    """Supervised pretraining of a shapes-world base policy on freshly rendered scenes (resumable)."""

    def body() -> None:
        from irisbench.core.devices import resolve_device
        from irisbench.train.config import apply_override
        from irisbench.train.pretrain import PretrainConfig, run_pretrain

        values: dict[str, Any] = {}
        for item in args.set_:
            apply_override(values, *parse_key_value(item, "--set"), where="--set")
        if args.threads is not None:
            values["num_threads"] = args.threads
        cfg = PretrainConfig.for_world(args.world, values, arch=args.arch)
        dev = resolve_device(args.device)  # before the output folder is made
        target = args.out or default_out("pretrain")
        last = run_pretrain(cfg, target, progress=args.progress, device=dev)
        console.print(f"last checkpoint: {last}\nuse it with: irisbench eval --policy {last}")

    guard(body)


@dataclass(kw_only=True)
class PretrainClipArgs(ProgressOption, SeedOption):
    out: Path | None = option(None, "Output folder (default: a new folder under results/runs/).")
    steps: int | None = option(None, "Training steps (default: the shipped model's recipe).")
    batch_size: int | None = option(None, "Batch size (default: the shipped model's recipe).")


@command("pretrain-clip", PretrainClipArgs)
def pretrain_clip_cmd(args: PretrainClipArgs) -> None:
    """Train a small CLIP contrastively on rendered shapes scenes and captions (the shipped shapes-clip)."""

    def body() -> None:
        from irisbench.metrics.shapes_clip_train import DEFAULT_BATCH_SIZE, DEFAULT_STEPS, train_shapes_clip

        target = args.out or default_out("shapes-clip")
        result = train_shapes_clip(args.steps or DEFAULT_STEPS, args.batch_size or DEFAULT_BATCH_SIZE, args.seed,
                                   target, progress=args.progress)
        console.print(f"shapes CLIP written to {target}")
        if isinstance(result, dict):
            console.print_json(json.dumps(result, default=str))

    guard(body)


@dataclass(kw_only=True)
class ExperimentArgs(DeviceOption, SeedOption):
    out: Path | None = option(None, "Experiment folder of run folders (re-running resumes; default: "
                                    "results/runs/experiment, or results/runs/experiment-WORLD).")
    world: str = option("shapes", "shapes, or textures (per-patch shading, lossy tokenizer: image tokens are "
                                  "genuinely uncertain); sets the base, the default methods and the README block.")
    arch: str = option("shapes-lm", "The model trained: shapes-lm (the world's shipped base), or janus (the shipped "
                                    "tiny transformers Janus, janus-shapes, through the Janus-Pro code path: IRIS, "
                                    "verifier and null-random as janus-shapes-*; shapes world only).")
    steps: int = option(40, "GRPO steps per method.")
    checkpoint_every: int = option(20, "Checkpoint (and val evaluation) interval.")
    method: list[str] = option([], "LABEL=PRESET to train (repeatable; default: iris-nsc, verifier, null-random "
                                   "(null-shapes: a random reward); --extended adds iris-faithful; textures world: "
                                   "those four and nsc-balanced). The second null control: "
                                   "null-shuffled=null-shuffled-shapes.")
    seeds: str = option("0,1,2", "Training seeds, a comma list: each method trains once per seed, and the summary "
                                 "gives the mean delta across seeds with its CI.")
    base_images: int = option(8, "Images per prompt of the base's evaluations (the base is shared by every method "
                                 "and seed; each checkpoint draws 2).", "--base-images")
    seen: bool = option(True, "Also score the base and each best-val checkpoint on GenEval's seen split "
                              "(RL-training texts) beside test (unseen texts).", "--seen/--no-seen")
    threads: int | None = option(None, "torch threads of each process (default: torch's with one process, else the "
                                       "usable cores shared out among --jobs).")
    jobs: int | None = option(None, "Processes that run training seeds and evaluations side by side (default: one per "
                                    "usable core on a CPU, one on a GPU). The scores do not depend on it.")
    extended: bool = option(False, "Shapes world: also train IRIS as released (iris-faithful) and score the "
                                   "CompBench-style suite, past the main job's 30 minutes; publish it with "
                                   "--publish-to results/experiment-extended.", "--extended")
    publish: bool = option(False, "Also rewrite the experiment block of ./README.md and publish the tidy tables and "
                                  "plots under results/experiment[-WORLD or -janus]/ (tracked files; run from the "
                                  "repository root). Without it the experiment writes only into --out.",
                           "--publish/--no-publish", "--publish-readme/--no-publish-readme")
    publish_to: Path | None = option(None, "Also publish the tidy tables, per-image records, curve.csv, plots and "
                                           "summary.md into this folder, the README left alone (an extended run, "
                                           "e.g. results/released-recipe).", "--publish-to")


@command("experiment", ExperimentArgs)
def experiment_cmd(args: ExperimentArgs) -> None:
    """The paper's experiment on the shapes world: train IRIS and its variants, evaluate, analyse, report.
    --seed is the evaluation seed: the base and every checkpoint draw the same images (paired deltas)."""
    from irisbench.experiment.run import ExperimentConfig, parse_seeds, run_experiment
    from irisbench.experiment.summary import readme_markers

    def body() -> None:
        a = args
        cfg = ExperimentConfig(steps=a.steps, checkpoint_every=a.checkpoint_every, seed=a.seed,
                               seeds=parse_seeds(a.seeds), threads=a.threads, jobs=a.jobs, device=a.device,
                               world=a.world, arch=a.arch, base_images_per_prompt=a.base_images, seen=a.seen,
                               extended=a.extended)
        if a.extended and a.world != "shapes":
            raise UsageError(f"--extended is the shapes world's extended run; --world {a.world} already trains "
                             "every method on both suites: leave --extended out")
        if a.extended and a.publish:
            raise UsageError("--publish writes the README's block, which is the main job's: publish the extended "
                             "run with --publish-to results/experiment-extended")
        if a.method:
            cfg.methods = {}
            for item in a.method:
                label, preset = parse_named(item)
                if not label or not preset:
                    raise UsageError(f"--method {item!r} is not of the form LABEL=PRESET")
                cfg.methods[label] = preset
        cfg.check()  # one line for a bad --world or method list, before anything is written
        target = None
        if a.publish:
            target, begin = Path("README.md"), readme_markers(cfg.name)[0]
            if not target.is_file() or begin not in target.read_text(encoding="utf-8"):
                raise UsageError(f"--publish rewrites the {begin} block of ./README.md, which "
                                 f"{'has no such block' if target.is_file() else 'does not exist here'}: run from "
                                 "the repository root, or leave --publish out")
        if a.publish_to is not None and a.publish_to.exists() and not a.publish_to.is_dir():
            raise UsageError(f"--publish-to {a.publish_to}: exists and is not a folder; give a folder path")
        folder = Path("results/runs") / ("experiment" if cfg.name == "shapes" else f"experiment-{cfg.name}")
        run_experiment(a.out or folder, cfg, console=console, publish_readme=target, publish_folder=a.publish_to)

    guard(body)




@dataclass(kw_only=True)
class TrainArgs(ProgressOption, ConfigOptions, DeviceOption, SamplingOptions, SeedOption, PolicyOptions):
    out: Path | None = option(None, "Run folder (default: a new folder under results/runs/). Re-running into it "
                                    "resumes from the last checkpoint.")
    allow_config_change: bool = option(False, "Resume even if the config differs from the saved one.")
    list_presets: bool = option(False, "List the config presets and exit.", "--list-presets")

    def overrides(self) -> dict[str, Any]:
        """The config fields set by the shared flags (--policy, --model, --seed, --cfg, --temperature, --top-k);
        they apply after the preset and --set."""
        shared = ("policy", "model", "seed", "cfg", "temperature", "top_k")
        return {name: getattr(self, name) for name in shared if name in self.given}


@command("train", TrainArgs, defaults={"seed": None})
def train_cmd(args: TrainArgs) -> None:
    """GRPO training with intrinsic (IRIS: nsc, sc, entropy, ...) or external (verifier, clip) rewards.
    --policy, --model, --seed and the sampling flags set those config fields (after the preset and --set)."""
    from irisbench.train.config import load_preset, preset_names, resolve_config

    if args.list_presets:
        table = Table(title="training presets")
        table.add_column("preset")
        table.add_column("reward")
        table.add_column("description")
        for name in preset_names():
            raw = load_preset(name)
            table.add_row(name, str(raw.get("reward", "nsc")), _preset_description(name))
        console.print(table)
        return

    def body() -> Path:
        from irisbench.core.devices import resolve_device
        from irisbench.train.trainer import GRPOTrainer

        cfg = resolve_config(args.config, args.set_)
        if args.overrides():
            cfg = replace(cfg, **args.overrides())
            cfg.check()
        resolve_device(args.device)  # one line before a run folder is made (the trainer resolves it again per rank)
        target = claim_out(args.out) if args.out else default_out(f"train-{Path(args.config).stem}")  # removed if empty
        trainer = GRPOTrainer(cfg, target, progress=args.progress, allow_config_change=args.allow_config_change,
                              device=args.device)
        last = trainer.train()
        main = trainer.dist.main
        del trainer  # its sharded model holds the process group: freed before the group is left
        distributed.end()
        if main:
            console.print(f"run folder: {target}\nlast checkpoint: {last}")
        return last

    guard(body)


@dataclass(kw_only=True)
class DryrunArgs(ConfigOptions):
    # not DeviceOption: where the fake tensors are made (cuda needs no GPU here), not a device to run on
    device: str = option("cuda", "cuda (sampling on fake CUDA tensors, the update on meta) or cpu.")
    decode_steps: int = option(2, "Decode steps run per sampling loop (0: all; a full 1B rollout takes most of an hour "
                                  "on a CPU); the rest is padded with stub tokens.")
    rows: int = option(0, "Rows of the evaluation batch (0: the policy's batch_size).")
    memory: bool = option(False, "Also track the update's activation and temporary peaks (MemTracker; minutes at "
                                 "full size).")
    world: list[int] = option([], "Also run the step as rank 0 of N GPUs under FSDP2 on a fake process group "
                                  "(repeatable: -w 1 -w 2 -w 4 -w 8) and print per-GPU memory by category "
                                  "(fsdp_memory_gb; about 3 minutes per N at full size).", "--world", "-w")


@command("dryrun", DryrunArgs, defaults={"config": "janus-pro-1b-iris"})
def dryrun_cmd(args: DryrunArgs) -> None:
    """Build the preset's full-size Janus-Pro without weights and run one evaluation batch and one GRPO step;
    print FLOPs, memory and roofline times as JSON. Any device mismatch in the code path fails it."""

    def body() -> None:
        from irisbench.dryrun.cost import cost
        from irisbench.dryrun.weightless import dry_run
        from irisbench.train.config import resolve_config

        bad = [n for n in args.world if n < 1]
        if bad:
            raise UsageError(f"--world {bad[0]}: a world has at least one rank (e.g. -w 1 -w 2 -w 4 -w 8)")
        cfg = resolve_config(args.config, args.set_)
        decode_steps = args.decode_steps or None
        report = dry_run(cfg, device=args.device, measure=args.memory, decode_steps=decode_steps,
                         rows=args.rows or None)
        report["cost"] = cost(report, cfg)
        if args.world:
            from irisbench.dryrun.table import fsdp_table

            report["fsdp_memory_gb"] = fsdp_table(cfg, list(args.world), single=report, decode_steps=decode_steps)
        print(json.dumps(report, indent=2, default=str))

    guard(body)


def _preset_description(name: str) -> str:
    from irisbench.train.config import _read_yaml

    return str(_read_yaml(name)[0].get("description", ""))
