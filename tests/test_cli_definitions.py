"""Options defined once (``irisbench.cli.options``): the shared options carry one definition on every command
that takes them; the commands built from dataclasses keep the flags they had; a flag is parsed into its field;
an option given where it does not apply is refused with one line; the shared flags reach the code."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

import irisbench.cli.analysis as cli_analysis
import irisbench.cli.eval as cli_eval
import irisbench.cli.train as cli_train
from irisbench.cli import app
from irisbench.cli.options import (
    DEVICE_HELP,
    ConfigOptions,
    DeviceOption,
    MetricFlags,
    Options,
    PolicyOptions,
    ProgressOption,
    ResamplesOption,
    SamplingOptions,
    ScorerOptionFlag,
    SeedOption,
    command,
    given,
    option,
)

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
GROUP = typer.main.get_command(app)
ARGS = {"eval": cli_eval.EvalArgs, "metrics": cli_eval.MetricsArgs, "probe": cli_analysis.ProbeArgs,
        "train": cli_train.TrainArgs, "pretrain": cli_train.PretrainArgs, "experiment": cli_train.ExperimentArgs,
        "analyze": cli_analysis.AnalyzeArgs, "pretrain-clip": cli_train.PretrainClipArgs,
        "dryrun": cli_train.DryrunArgs}
SHARED = {"policy": PolicyOptions, "model": PolicyOptions, "seed": SeedOption, "cfg": SamplingOptions,
          "temperature": SamplingOptions, "top_k": SamplingOptions, "device": DeviceOption}
# which command takes which shared option
TAKES = {"eval": ("policy", "model", "seed", "cfg", "temperature", "top_k", "device"),
         "probe": ("policy", "model", "seed", "cfg", "temperature", "top_k", "device"),
         "train": ("policy", "model", "seed", "cfg", "temperature", "top_k", "device"),
         "experiment": ("seed", "device"), "pretrain": ("device",), "metrics": ("device",),
         "analyze": ("seed",), "pretrain-clip": ("seed",)}
# dryrun's --device is its own (where fake tensors are made), not the shared one: it is in no row above

# every flag each command had before its options became dataclasses (names and defaults kept; probe's --policy
# default moved from "shapes-base" to "not given", which still means shapes-base)
FLAGS_BEFORE = {
    "eval": {"--suite": None, "--policy": None, "--model": None, "--split": None, "--prompts": None,
             "--images-per-prompt": None, "-n": None, "--seed": 0, "--batch-size": 64, "--cfg": None,
             "--temperature": None, "--top-k": None, "--limit": None, "--images": None, "--category": None,
             "--allow-missing": False, "--no-save-images": False, "--metrics": None, "--metric-option": [],
             "--clip-model": None, "--clip-pretrained": None, "--clip-scale": "raw", "--fid-reference": None,
             "--scorer-option": [], "--out": None, "--allow-config-change": False, "--judge": None,
             "--judge-model": None, "--judge-api-key-env": None, "--judge-workers": 1, "--wise-protocol": "legacy",
             "--judge-retries": 3, "--judge-backoff": 2.0, "--allow-failures": False, "--device": None},
    "train": {"--config": "iris-shapes", "-c": "iris-shapes", "--set": [], "-s": [], "--out": None,
              "--allow-config-change": False, "--no-allow-config-change": False, "--list-presets": False,
              "--progress": True, "--no-progress": True, "--device": None},
    "pretrain": {"--out": None, "--set": [], "-s": [], "--progress": True, "--no-progress": True, "--device": None,
                 "--world": "shapes", "--threads": None, "--arch": "shapes-lm"},
    "probe": {"--policy": None, "--model": None, "--suite": "geneval", "--split": None, "--prompts-file": None,
              "--g": 8, "--rewards": None, "--prompts": 48, "--cfg": None, "--clip-model": None,
              "--clip-pretrained": None, "--seed": 0, "--n-resamples": 2000, "--out": None, "--device": None},
    "metrics": {"--metrics": None, "--metric-option": [], "--clip-model": None, "--clip-pretrained": None,
                "--clip-scale": "raw", "--fid-reference": None, "--kid-subset-size": None, "--device": None},
    "experiment": {"--out": None, "--world": "shapes", "--steps": 40, "--checkpoint-every": 20, "--method": [],
                   "--seed": 0, "--seeds": "0,1,2", "--base-images": 8, "--seen": True, "--no-seen": True,
                   "--threads": None, "--extended": False, "--publish": False, "--no-publish": False,
                   "--publish-readme": False, "--no-publish-readme": False, "--publish-to": None, "--device": None},
    "analyze": {"--out": None, "--n-resamples": 2000, "--seed": 0, "--plots": True, "--no-plots": True},
    "pretrain-clip": {"--out": None, "--steps": None, "--batch-size": None, "--seed": 0, "--progress": True,
                      "--no-progress": True},
    "dryrun": {"--config": "janus-pro-1b-iris", "-c": "janus-pro-1b-iris", "--set": [], "-s": [], "--device": "cuda",
               "--decode-steps": 2, "--rows": 0, "--memory": False, "--no-memory": False, "--world": [], "-w": []},
}
# the options several commands share beside the ones above, and the commands that take each (group, command)
SHARED_MORE = {"scorer_option": (ScorerOptionFlag, [("eval",), ("scorers", "check")]),
               "config": (ConfigOptions, [("train",), ("dryrun",)]), "set_": (ConfigOptions, [("train",), ("dryrun",)]),
               "progress": (ProgressOption, [("train",), ("pretrain",), ("pretrain-clip",)]),
               "n_resamples": (ResamplesOption, [("probe",), ("analyze",)])}


def params(name: str) -> dict[str, typer.core.click.Parameter]:
    return {p.name: p for p in GROUP.commands[name].params}


def parse(name: str, args: list[str]) -> Options:
    """The options dataclass ``name`` would be called with for ``args`` (parsed, not run)."""
    ctx = GROUP.commands[name].make_context(name, list(args))
    return ARGS[name](**ctx.params, given=given(ctx, ctx.params))


def one_line(output: str) -> str:
    lines = [x for x in output.splitlines() if x.strip()]
    assert len(lines) == 1, output
    return lines[0]


def test_the_device_help_is_written_once_in_the_source() -> None:
    needle = "under torchrun each process"
    hits = [f for f in (ROOT / "irisbench").rglob("*.py") if needle in f.read_text(encoding="utf-8")]
    assert hits == [ROOT / "irisbench" / "cli" / "options.py"]
    assert len(re.findall(needle, hits[0].read_text(encoding="utf-8"))) == 1


@pytest.mark.parametrize("shared", sorted(SHARED))
def test_a_shared_option_is_the_same_on_every_command_that_takes_it(shared: str) -> None:
    field = next(f for f in SHARED[shared].cli_fields() if f.name == shared)
    takers = [name for name, taken in TAKES.items() if shared in taken]
    assert takers
    for name in takers:
        p = params(name)[shared]
        assert p.help == field.metadata["help"] and p.opts == ["--" + shared.replace("_", "-")], name
    assert params("eval")["device"].help == DEVICE_HELP
    for name, taken in TAKES.items():  # and no command takes one it is not listed for
        assert {s for s in SHARED if s in params(name)} == set(taken), name


@pytest.mark.parametrize("name", sorted(SHARED_MORE))
def test_the_other_shared_options_are_one_definition_each(name: str) -> None:
    options, takers = SHARED_MORE[name]
    field = next(f for f in options.cli_fields() if f.name == name)
    for path in takers:
        cmd = GROUP
        for part in path:
            cmd = cmd.commands[part]
        p = next(p for p in cmd.params if p.name == name)
        assert p.help == field.metadata["help"], path
        assert p.opts == list(field.metadata["decls"] or ["--" + name.replace("_", "-")]), path


def test_scorers_check_and_analyze_read_their_flags(monkeypatch, tmp_path: Path) -> None:
    import irisbench.scorers.weights as weights

    seen: list = []
    monkeypatch.setattr(weights, "check_scorers", lambda names, options: seen.append((names, options)) or [])
    result = runner.invoke(app, ["scorers", "check", "--scorer", "compbench-real", "--scorer-option",
                                 "detector_model=/m", "--json"])
    assert result.exit_code == 0, result.output
    assert seen == [(["compbench-real"], {"detector_model": "/m"})] and result.output.strip() == "[]"
    import irisbench.analysis as analysis

    got: dict = {}
    monkeypatch.setattr(analysis, "analyze_runs", lambda named, target, **kw: got.update(named=named, **kw) or
                        {"tables": {}, "notes": []})
    result = runner.invoke(app, ["analyze", f"a={tmp_path}", "--seed", "3", "--n-resamples", "10", "--no-plots",
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert got == {"named": {"a": str(tmp_path)}, "n_resamples": 10, "seed": 3, "make_plots": False}


@pytest.mark.parametrize("name", sorted(FLAGS_BEFORE))
def test_commands_keep_their_flags_and_defaults(name: str) -> None:
    by_flag = {o: p for p in params(name).values() for o in (*p.opts, *p.secondary_opts)}
    for flag, default in FLAGS_BEFORE[name].items():
        assert flag in by_flag, (name, flag)
        assert by_flag[flag].default == default, (name, flag)
    required, named = {"metrics": (["RUN", "--metrics", "clip"], {"run", "metrics"}),
                       "analyze": (["RUN"], {"runs"})}.get(name, ([], set()))
    defaults = parse(name, required)  # what the body sees when nothing else is given
    assert defaults.given == named
    assert getattr(defaults, "seed", 0) == (None if name == "train" else 0)  # train: the config's


def test_eval_parses_every_flag_into_its_field() -> None:
    args = parse("eval", ["--suite", "compbench", "--policy", "oracle", "--model", "m", "--split", "test",
                          "--prompts", "p.jsonl", "-n", "3", "--seed", "7", "--batch-size", "5", "--cfg", "2.5",
                          "--temperature", "0.7", "--top-k", "11", "--limit", "2", "--category", "color",
                          "--allow-missing", "--no-save-images", "--metrics", "clip,fid,pickscore",
                          "--metric-option", "pickscore_model=/m", "--clip-model", "ViT", "--clip-pretrained", "w",
                          "--clip-scale", "2.5", "--fid-reference", "ref", "--scorer-option", "x=y", "--out", "o",
                          "--allow-config-change", "--device", "cpu"])
    assert (args.suite, args.policy, args.model, args.split, args.prompts, args.images_per_prompt) == \
        ("compbench", "oracle", "m", "test", Path("p.jsonl"), 3)
    assert (args.seed, args.batch_size, args.cfg, args.temperature, args.top_k, args.limit) == (7, 5, 2.5, 0.7, 11, 2)
    assert (args.category, args.allow_missing, args.no_save_images, args.allow_config_change, args.device) == \
        ("color", True, True, True, "cpu")
    assert (args.metrics, args.metric_option, args.clip_model, args.clip_pretrained, args.clip_scale) == \
        ("clip,fid,pickscore", ["pickscore_model=/m"], "ViT", "w", "2.5")
    assert (args.fid_reference, args.scorer_option, args.out) == (Path("ref"), ["x=y"], Path("o"))
    assert "device" in args.given and "judge" not in args.given
    opts = args.eval_options()  # what evaluate() receives
    assert (opts.policy, opts.seed, opts.limit_per_tag, opts.save_images, opts.prompts_file) == \
        ("oracle", 7, 2, False, "p.jsonl")
    assert opts.scorer_options == {"x": "y"} and opts.metrics.names == ("clip", "fid", "pickscore")
    assert opts.metrics.preference["pickscore"]["model"] == "/m"
    assert (opts.metrics.clip_scale, opts.metrics.fid_reference) == ("2.5", "ref")
    wise = parse("eval", ["--suite", "wise", "--prompts", "w.json", "--judge", "stub-for-tests", "--judge-model", "j",
                          "--judge-api-key-env", "K", "--judge-workers", "4", "--wise-protocol", "verified",
                          "--judge-retries", "5", "--judge-backoff", "0.5", "--allow-failures", "--seed", "3"])
    w = wise.wise_options()
    assert (w.prompts, w.judge, w.judge_model, w.judge_api_key_env, w.judge_workers, w.protocol, w.retries,
            w.backoff, w.seed, w.policy) == ("w.json", "stub-for-tests", "j", "K", 4, "verified", 5, 0.5, 3,
                                             "shapes-base")
    assert wise.allow_failures


def test_the_other_commands_parse_their_flags() -> None:
    probe = parse("probe", ["--policy", "oracle", "--prompts", "5", "--prompts-file", "f", "--g", "4", "--cfg", "3",
                            "--temperature", "0.9", "--top-k", "7", "--seed", "2", "--device", "cpu"])
    assert (probe.policy, probe.n_prompts, probe.prompts_file, probe.g, probe.cfg, probe.temperature, probe.top_k,
            probe.seed, probe.device) == ("oracle", 5, Path("f"), 4, 3.0, 0.9, 7, 2, "cpu")
    metrics = parse("metrics", ["run-dir", "--metrics", "kid", "--kid-subset-size", "9", "--device", "cpu"])
    assert (metrics.run, metrics.metrics, metrics.kid_subset_size, metrics.device) == (Path("run-dir"), "kid", 9,
                                                                                       "cpu")
    experiment = parse("experiment", ["--seed", "4", "--seeds", "0,1", "--no-seen", "--publish-readme",
                                      "--method", "a=b", "--device", "cpu"])
    assert (experiment.seed, experiment.seeds, experiment.seen, experiment.publish, experiment.method) == \
        (4, "0,1", False, True, ["a=b"])
    pretrain = parse("pretrain", ["-s", "steps=3", "--threads", "1", "--no-progress", "--device", "cpu"])
    assert (pretrain.set_, pretrain.threads, pretrain.progress, pretrain.device) == (["steps=3"], 1, False, "cpu")
    train = parse("train", ["-c", "null-shapes", "-s", "steps=2", "--seed", "0", "--top-k", "9"])
    assert train.overrides() == {"seed": 0, "top_k": 9}  # given, even at a default value


def test_metrics_requires_its_metrics() -> None:
    result = runner.invoke(app, ["metrics", "somewhere"])
    assert result.exit_code == 2 and "--metrics" in result.output


def test_wise_refuses_the_metric_options_it_does_not_read(tmp_path: Path) -> None:
    file = tmp_path / "wise.json"
    file.write_text(json.dumps([{"Prompt": "a red circle", "Explanation": "", "Category": "c", "Subcategory": "s",
                                 "prompt_id": 1}]))
    out = tmp_path / "run"
    result = runner.invoke(app, ["eval", "--suite", "wise", "--policy", "oracle", "--prompts", str(file), "--judge",
                                 "stub-for-tests", "--metric-option", "pickscore_model=x", "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert one_line(result.output).endswith("--metric-option does not apply to --suite wise: WISE computes no CLIP "
                                            "score, FID or KID")


@pytest.mark.parametrize("extra, line", [
    (["--category", "color"], "--category applies with --images only: it names the category of a scored folder"),
    (["--allow-missing"], "--allow-missing applies with --images only: every prompt's image is generated"),
])
@pytest.mark.parametrize("suite", ["geneval", "compbench"])
def test_generating_refuses_the_folder_options(suite: str, extra: list[str], line: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["eval", "--suite", suite, "--policy", "oracle", *extra, "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert one_line(result.output).endswith(line)


@pytest.mark.parametrize("args, flag, readers", [
    (["eval", "--policy", "oracle", "--clip-scale", "2.5"], "--clip-scale", "clip"),
    (["eval", "--policy", "oracle", "--metrics", "clip", "--fid-reference", "ref"], "--fid-reference", "fid, kid"),
    (["eval", "--policy", "oracle", "--metrics", "pickscore", "--clip-model", "ViT-B-32"], "--clip-model",
     "clip, fid, kid"),
    (["metrics", "RUN", "--metrics", "kid", "--clip-scale", "raw"], "--clip-scale", "clip"),
    (["metrics", "RUN", "--metrics", "clip", "--clip-pretrained", "w"], None, None),  # read: no refusal here
])
def test_metric_options_without_the_metric_that_reads_them_are_refused(args, flag, readers, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, [a.replace("RUN", str(out)) for a in args] + (["--out", str(out)]
                                                                             if args[0] == "eval" else []))
    assert result.exit_code == 2 and not out.exists()
    if flag is None:
        assert "read only by" not in result.output  # it fails later: the run folder does not exist
    else:
        assert one_line(result.output).endswith(f"{flag} is read only by the metrics {readers}: add one to --metrics "
                                                f"or drop {flag}")


@dataclass(kw_only=True)
class Toy(SeedOption):
    name: str = option(..., "A name.", argument=True)
    fast: bool = option(False, "Go fast.", "--fast", not_for={"slow mode": "it is slow"})
    tag: list[str] = option([], "A tag (repeatable).", "--tag", "-t")


def test_command_builds_a_typer_command_from_a_dataclass() -> None:
    toy_app = typer.Typer()
    seen: list[Toy] = []

    @command("toy", Toy, on=toy_app, defaults={"seed": 5})
    def toy(args: Toy) -> None:
        """Toy help."""
        seen.append(args)

    @toy_app.command("other")  # a second command: the app keeps toy as a subcommand
    def other() -> None:
        pass

    result = runner.invoke(toy_app, ["toy", "x", "--fast", "-t", "a", "--tag", "b"])
    assert result.exit_code == 0, result.output
    assert seen[-1] == Toy(name="x", fast=True, tag=["a", "b"], seed=5)
    assert seen[-1].given == {"name", "fast", "tag"} and seen[-1].refused("slow mode") == [("--fast", "it is slow")]
    help_text = runner.invoke(toy_app, ["toy", "--help"]).output
    assert "Toy help." in help_text and "A tag (repeatable)." in help_text and "[default: 5]" in help_text
    assert runner.invoke(toy_app, ["toy"]).exit_code == 2  # the argument is required
    with pytest.raises(TypeError, match="unknown options"):
        command("bad", Toy, on=toy_app, defaults={"nope": 1})


def test_train_flags_set_the_config_after_the_preset_and_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import irisbench.train.trainer as trainer

    got = []

    class Trainer:
        def __init__(self, cfg, target, **kwargs):
            got.append(cfg)
            raise RuntimeError("stop before anything trains")

    monkeypatch.setattr(trainer, "GRPOTrainer", Trainer)
    args = ["train", "-c", "iris-shapes", "-s", "seed=3", "-s", "cfg=1.5", "--out", str(tmp_path / "run"),
            "--device", "cpu"]
    runner.invoke(app, [*args, "--seed", "9", "--temperature", "0.8", "--top-k", "12", "--policy", "random"])
    assert (got[-1].seed, got[-1].cfg, got[-1].temperature, got[-1].top_k, got[-1].policy) == (9, 1.5, 0.8, 12,
                                                                                              "random")
    runner.invoke(app, args)  # without the flags: the preset and --set
    assert (got[-1].seed, got[-1].cfg, got[-1].temperature, got[-1].policy) == (3, 1.5, None, "shapes-base")


def test_probe_passes_its_sampling_flags_to_the_sampler(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import irisbench.train.alignment as alignment

    got: list[dict] = []
    real = alignment.probe_alignment

    def probe(*args, **kwargs):
        got.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(alignment, "probe_alignment", probe)
    out = tmp_path / "probe"
    result = runner.invoke(app, ["probe", "--policy", "oracle", "--prompts", "2", "--g", "2", "--rewards", "verifier",
                                 "--n-resamples", "10", "--temperature", "0.5", "--top-k", "3", "--cfg", "2",
                                 "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (got[0]["temperature"], got[0]["top_k"], got[0]["cfg"]) == (0.5, 3, 2.0)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["temperature"], config["top_k"], config["cfg"]) == (0.5, 3, 2.0)


def test_metric_flags_make_the_metric_options() -> None:
    flags = MetricFlags(metrics="clip,kid", metric_option=[], clip_scale="2.5")
    opts = flags.metric_options(kid_subset_size=4, device="cpu")
    assert opts.names == ("clip", "kid") and opts.clip_scale == "2.5" and opts.kid_subset_size == 4
    assert opts.device == "cpu"
