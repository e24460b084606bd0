"""The command line: fast start-up, listings, suites, env, and honest stubs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from irisbench.cli import app

runner = CliRunner()


def test_cli_import_pulls_in_no_heavy_library() -> None:
    code = ("import sys, irisbench.cli\n"
            "heavy = [m for m in ('torch', 'transformers', 'open_clip', 'pandas', 'scipy') if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("eval", "suites", "ls", "env", "experiment", "train"):
        assert cmd in result.output


def test_ls_lists_registries() -> None:
    result = runner.invoke(app, ["ls"])
    assert result.exit_code == 0
    for name in ("oracle", "random", "shapes-base", "janus-pro", "shapes-exact", "geneval"):
        assert name in result.output


def test_suites_ls_and_show() -> None:
    result = runner.invoke(app, ["suites", "ls"])
    assert result.exit_code == 0 and "geneval" in result.output
    result = runner.invoke(app, ["suites", "show", "geneval", "--split", "val"])
    assert result.exit_code == 0, result.output
    for word in ("color_attr", "disjoint", "sha256"):
        assert word in result.output
    assert "prompt texts shared with the RL-training split: 0" in result.output


def test_suites_overlap_counts_shared_texts_and_refuses_repeats(tmp_path: Path) -> None:
    result = runner.invoke(app, ["suites", "build", "geneval", "--world", "shapes", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    clean = runner.invoke(app, ["suites", "overlap", str(tmp_path / "train.jsonl"), str(tmp_path / "val.jsonl"),
                                str(tmp_path / "test.jsonl")])
    assert clean.exit_code == 0, clean.output
    assert "│      0 │" in clean.output and "250" in clean.output  # 2+18+6+20+72+132 distinct texts, none shared
    train = tmp_path / "mine.txt"
    train.write_text("a photo of a ring\nA photo of  a Circle\nsomething else\n")
    held = tmp_path / "held.txt"
    held.write_text("a photo of a circle\na photo of a circle\na photo of a frame\n")
    found = runner.invoke(app, ["suites", "overlap", str(train), str(held)])
    assert found.exit_code == 1 and "'a photo of a circle' (training line 2)" in " ".join(found.output.split())
    train.write_text("a photo of a ring\nsomething else\n  a photo of a RING\n")
    dup = runner.invoke(app, ["suites", "overlap", str(train), str(held)])
    assert dup.exit_code == 2 and "Traceback" not in dup.output
    assert "line 3 repeats the prompt of line 1" in " ".join(dup.output.split())


def test_suites_build_regenerates_official_geneval_prompts(tmp_path: Path) -> None:
    out = tmp_path / "evaluation_metadata.jsonl"
    result = runner.invoke(app, ["suites", "build", "geneval", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert hashlib.sha256(out.read_bytes()).hexdigest() == (
        "5c48e0813e812e3c373fa5c8ed07a8f0a483be30272b4427b0559c8048e67c13")
    assert len(out.read_text().splitlines()) == 553


def test_suites_build_shapes_splits_validate(tmp_path: Path) -> None:
    result = runner.invoke(app, ["suites", "build", "geneval", "--world", "shapes", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for split in ("train", "val", "test"):
        check = runner.invoke(app, ["suites", "validate", str(tmp_path / f"{split}.jsonl"), "--world", "shapes"])
        assert check.exit_code == 0, check.output
    # shapes prompts are not COCO classes: validating against the open vocabulary names the class
    check = runner.invoke(app, ["suites", "validate", str(tmp_path / "test.jsonl")])
    assert check.exit_code != 0 and "not a known class" in check.output


def test_suites_validate_official_reference(reference: Path) -> None:
    result = runner.invoke(app, ["suites", "validate", str(reference / "geneval" / "evaluation_metadata.jsonl")])
    assert result.exit_code == 0, result.output
    assert "553" in result.output


def test_suites_validate_bad_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "s.yaml"
    bad.write_text("name: x\nprotocol: geneval\nprompts: {}\nscorer: {shapes: shapes-exakt}\nwat: 1\n")
    result = runner.invoke(app, ["suites", "validate", str(bad)])
    assert result.exit_code != 0 and "wat" in result.output


def test_env_reports_versions_and_git() -> None:
    result = runner.invoke(app, ["env", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert "python" in json.dumps(info) and "cuda_available" in info


def test_analyze_command_writes_tables(tmp_path: Path) -> None:
    from irisbench.evaluation.evaluate import EvalOptions, evaluate

    evaluate(EvalOptions(policy="random", limit=12, images_per_prompt=2), tmp_path / "random", progress=False)
    result = runner.invoke(app, ["analyze", f"random={tmp_path / 'random'}", "--out", str(tmp_path / "a"),
                                 "--n-resamples", "200", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "no uncertainty" in " ".join(result.output.split()).lower()  # the random policy draws no tokens
    assert (tmp_path / "a" / "summary.json").is_file()
    bad = runner.invoke(app, ["analyze", str(tmp_path / "missing"), "--out", str(tmp_path / "b")])
    assert bad.exit_code != 0 and "Traceback" not in bad.output


def test_report_command_compares_runs(tmp_path: Path) -> None:
    from irisbench.evaluation.evaluate import EvalOptions, evaluate

    for policy in ("oracle", "random"):
        evaluate(EvalOptions(policy=policy, limit=12, images_per_prompt=2), tmp_path / policy, progress=False)
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", f"oracle={tmp_path / 'oracle'}", str(tmp_path / "random"),
                                 "--base", "random", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "oracle improves on the base" in " ".join(result.output.split())
    html = (out / "report.html").read_text()
    assert "oracle" in html and "<img" in html
    bad = runner.invoke(app, ["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r2")])
    assert bad.exit_code != 0 and "Traceback" not in bad.output


def test_pretrain_command_trains_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "pt"
    args = ["pretrain", "--out", str(out), "--no-progress", "--set", "steps=2", "--set", "batch_size=4",
            "--set", "hidden_size=32", "--set", "num_layers=1", "--set", "num_heads=2", "--set", "intermediate_size=64",
            "--set", "tokenizer_scenes=500", "--set", "checkpoint_every=1", "--set", "lr=1e-3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "checkpoints" / "step-2" / "model.safetensors").is_file()
    again = runner.invoke(app, [*args[:-2], "--set", "lr=5e-4"])
    assert again.exit_code != 0 and "lr" in again.output
    bad = runner.invoke(app, ["pretrain", "--out", str(tmp_path / "x"), "--set", "stepz=3"])
    assert bad.exit_code != 0 and "stepz" in bad.output
    # --threads may change on resume (the recipe does not), and is recorded in the run's config
    assert json.loads((out / "pretrain_config.json").read_text())["num_threads"] == 1
    more = runner.invoke(app, [*args, "--threads", "2"])
    assert more.exit_code == 0, more.output
    assert json.loads((out / "pretrain_config.json").read_text())["num_threads"] == 2
