"""The training commands: ``pretrain``, ``pretrain-clip``, ``train`` and the ``experiment`` that trains,
evaluates and reports every method.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from irisbench.cli.shared import Command, app, claim_out, console, default_out, device_option, guard
from irisbench.core import distributed
from irisbench.core.errors import UsageError, parse_key_value, parse_named


@app.command("pretrain", cls=Command)
def pretrain_cmd(
    out: Path = typer.Option(None, help="Output folder (default: a new folder under results/runs/); "
                                        "re-running resumes."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a PretrainConfig field: key=value "
                                                          "(dotted keys reach into mapping fields)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    device: str = device_option(),
    world: str = typer.Option("shapes", help="shapes (flat colours, lossless tokenizer) or textures (per-patch "
                                             "shading, lossy tokenizer): starts from that world's shipped recipe."),
    threads: int = typer.Option(None, help="torch threads (default: the recipe's 1, the fastest on a busy machine; "
                                           "on a quiet machine use its cores). May change on resume."),
    arch: str = typer.Option("shapes-lm", help="shapes-lm (the shipped bases' Llama) or janus (a tiny transformers "
                                               "Janus with CoT and CFG: the janus-shapes policy); its recipe."),
) -> None:
    """Supervised pretraining of a shapes-world base policy on freshly rendered scenes (resumable)."""

    def body() -> None:
        from irisbench.train.config import apply_override
        from irisbench.train.pretrain import PretrainConfig, run_pretrain

        values: dict[str, Any] = {}
        for item in set_:
            apply_override(values, *parse_key_value(item, "--set"), where="--set")
        from irisbench.core.devices import resolve_device

        if threads is not None:
            values["num_threads"] = threads
        cfg = PretrainConfig.for_world(world, values, arch=arch)
        dev = resolve_device(device)  # before the output folder is made
        target = out or default_out("pretrain")
        last = run_pretrain(cfg, target, progress=progress, device=dev)
        console.print(f"last checkpoint: {last}\nuse it with: irisbench eval --policy {last}")

    guard(body)


@app.command("pretrain-clip", cls=Command)
def pretrain_clip_cmd(
    out: Path = typer.Option(None, help="Output folder (default: a new folder under results/runs/)."),
    steps: int = typer.Option(None, help="Training steps (default: the shipped model's recipe)."),
    batch_size: int = typer.Option(None, help="Batch size (default: the shipped model's recipe)."),
    seed: int = typer.Option(0, help="Seed."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train a small CLIP contrastively on rendered shapes scenes and captions (the shipped shapes-clip)."""

    def body() -> None:
        from irisbench.metrics.shapes_clip_train import DEFAULT_BATCH_SIZE, DEFAULT_STEPS, train_shapes_clip

        target = out or default_out("shapes-clip")
        result = train_shapes_clip(steps or DEFAULT_STEPS, batch_size or DEFAULT_BATCH_SIZE, seed, target,
                                   progress=progress)
        console.print(f"shapes CLIP written to {target}")
        if isinstance(result, dict):
            console.print_json(json.dumps(result, default=str))

    guard(body)


@app.command("experiment", cls=Command)
def experiment_cmd(
    out: Path = typer.Option(None, help="Experiment folder of run folders (re-running resumes; default: "
                                        "results/runs/experiment, or results/runs/experiment-WORLD)."),
    world: str = typer.Option("shapes", help="shapes, or textures (per-patch shading, lossy tokenizer: image tokens "
                                             "are genuinely uncertain); sets the base, the default methods and "
                                             "the README block."),
    steps: int = typer.Option(40, help="GRPO steps per method."),
    checkpoint_every: int = typer.Option(20, help="Checkpoint (and val evaluation) interval."),
    method: list[str] = typer.Option([], help="LABEL=PRESET to train (repeatable; default: iris-nsc, "
                                               "iris-faithful, verifier, null-random (null-shapes: a random "
                                               "reward); textures world: those and nsc-balanced). The second null "
                                               "control: null-shuffled=null-shuffled-shapes."),
    seed: int = typer.Option(0, help="Evaluation seed: the base and every checkpoint are evaluated with the same "
                                     "sampling seeds (paired deltas)."),
    seeds: str = typer.Option("0,1,2", help="Training seeds, a comma list: each method trains once per seed, "
                                            "and the summary gives the mean delta across seeds with its CI."),
    base_images: int = typer.Option(8, "--base-images", help="Images per prompt of the base's evaluations (the "
                                                             "base is shared by every method and seed; each "
                                                             "checkpoint draws 2)."),
    seen: bool = typer.Option(True, "--seen/--no-seen", help="Also score the base and each best-val checkpoint on "
                                                             "GenEval's seen split (RL-training texts) beside test "
                                                             "(unseen texts)."),
    threads: int = typer.Option(None, help="torch threads (default: torch's; 1 is faster on a busy machine)."),
    publish: bool = typer.Option(False, "--publish/--no-publish", "--publish-readme/--no-publish-readme",
                                 help="Also rewrite the experiment block of ./README.md and publish the tidy tables "
                                      "and plots under results/experiment[-WORLD]/ (tracked files; run from the "
                                      "repository root). Without it the experiment writes only into --out."),
    publish_to: Path = typer.Option(None, "--publish-to", help="Also publish the tidy tables, per-image records, "
                                    "curve.csv, plots and summary.md into this folder, the README left alone (an "
                                    "extended run, e.g. results/released-recipe)."),
    device: str = device_option(),
) -> None:
    """The paper's experiment on the shapes world: train IRIS and its variants, evaluate, analyse, report."""
    from irisbench.experiment.run import ExperimentConfig, parse_seeds, run_experiment
    from irisbench.experiment.summary import readme_markers

    def body() -> None:
        cfg = ExperimentConfig(steps=steps, checkpoint_every=checkpoint_every, seed=seed, seeds=parse_seeds(seeds),
                               threads=threads, device=device, world=world,
                               base_images_per_prompt=base_images, seen=seen)
        if method:
            cfg.methods = {}
            for item in method:
                label, preset = parse_named(item)
                if not label or not preset:
                    raise UsageError(f"--method {item!r} is not of the form LABEL=PRESET")
                cfg.methods[label] = preset
        cfg.check()  # one line for a bad --world or method list, before anything is written
        target = None
        if publish:
            target, begin = Path("README.md"), readme_markers(cfg.world)[0]
            if not target.is_file() or begin not in target.read_text(encoding="utf-8"):
                raise UsageError(f"--publish rewrites the {begin} block of ./README.md, which "
                                 f"{'has no such block' if target.is_file() else 'does not exist here'}: run from "
                                 "the repository root, or leave --publish out")
        if publish_to is not None and publish_to.exists() and not publish_to.is_dir():
            raise UsageError(f"--publish-to {publish_to}: exists and is not a folder; give a folder path")
        folder = Path("results/runs") / ("experiment" if cfg.world == "shapes" else f"experiment-{cfg.world}")
        run_experiment(out or folder, cfg, console=console, publish_readme=target, publish_folder=publish_to)

    guard(body)




@app.command("train", cls=Command)
def train_cmd(
    config: str = typer.Option("iris-shapes", "--config", "-c",
                               help="A preset name (see --list-presets) or a YAML config file."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a field: key=value (repeatable); a dotted "
                                                          "key sets one entry, e.g. policy_options.max_plan_tokens=1."),
    out: Path = typer.Option(None, help="Run folder (default: a new folder under results/runs/). "
                                        "Re-running into it resumes from the last checkpoint."),
    allow_config_change: bool = typer.Option(False, help="Resume even if the config differs from the saved one."),
    list_presets: bool = typer.Option(False, "--list-presets", help="List the config presets and exit."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    device: str = device_option(),
) -> None:
    """GRPO training with intrinsic (IRIS: nsc, sc, entropy, ...) or external (verifier, clip) rewards."""
    from irisbench.train.config import load_preset, preset_names, resolve_config

    if list_presets:
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

        cfg = resolve_config(config, set_)
        resolve_device(device)  # one line before a run folder is made (the trainer resolves it again per rank)
        target = claim_out(out) if out else default_out(f"train-{Path(config).stem}")  # removed if left empty
        trainer = GRPOTrainer(cfg, target, progress=progress, allow_config_change=allow_config_change,
                              device=device)
        last = trainer.train()
        main = trainer.dist.main
        del trainer  # its sharded model holds the process group: freed before the group is left
        distributed.end()
        if main:
            console.print(f"run folder: {target}\nlast checkpoint: {last}")
        return last

    guard(body)


@app.command("dryrun", cls=Command)
def dryrun_cmd(
    config: str = typer.Option("janus-pro-1b-iris", "--config", "-c",
                               help="A Janus-Pro training preset or YAML config (its model folder need not exist)."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a field: key=value (repeatable)."),
    device: str = typer.Option("cuda", help="cuda (sampling on fake CUDA tensors, the update on meta) or cpu."),
    decode_steps: int = typer.Option(2, help="Decode steps run per sampling loop (0: all; a full 1B rollout takes "
                                             "most of an hour on a CPU); the rest is padded with stub tokens."),
    rows: int = typer.Option(0, help="Rows of the evaluation batch (0: the policy's batch_size)."),
    memory: bool = typer.Option(False, help="Also track the update's activation and temporary peaks (MemTracker; "
                                            "minutes at full size)."),
    world: list[int] = typer.Option([], "--world", "-w",
                                    help="Also run the step as rank 0 of N GPUs under FSDP2 on a fake process group "
                                         "(repeatable: -w 1 -w 2 -w 4 -w 8) and print per-GPU memory by category "
                                         "(fsdp_memory_gb; about 3 minutes per N at full size)."),
) -> None:
    """Build the preset's full-size Janus-Pro without weights and run one evaluation batch and one GRPO step;
    print FLOPs, memory and roofline times as JSON. Any device mismatch in the code path fails it."""

    def body() -> None:
        from irisbench.dryrun.cost import cost
        from irisbench.dryrun.weightless import dry_run
        from irisbench.train.config import resolve_config

        bad = [n for n in world if n < 1]
        if bad:
            raise UsageError(f"--world {bad[0]}: a world has at least one rank (e.g. -w 1 -w 2 -w 4 -w 8)")
        cfg = resolve_config(config, set_)
        report = dry_run(cfg, device=device, measure=memory, decode_steps=decode_steps or None, rows=rows or None)
        report["cost"] = cost(report, cfg)
        if world:
            from irisbench.dryrun.table import fsdp_table

            report["fsdp_memory_gb"] = fsdp_table(cfg, list(world), single=report, decode_steps=decode_steps or None)
        print(json.dumps(report, indent=2, default=str))

    guard(body)


def _preset_description(name: str) -> str:
    from irisbench.train.config import _read_yaml

    return str(_read_yaml(name)[0].get("description", ""))
