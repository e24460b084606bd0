"""The command line's contract: project errors as one line, other errors with their traceback, --debug,
--version, help without type noise, dotted overrides, report/analyze never writing into a run folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_fixtures import make_run
from typer.testing import CliRunner

from irisbench.cli import app, shared
from irisbench.core.errors import IrisbenchError, UsageError, did_you_mean, parse_key_value
from irisbench.train.config import ConfigError, resolve_config

runner = CliRunner()


def test_project_errors_are_one_line_and_others_keep_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(exc: BaseException):
        def body() -> None:
            raise exc
        return body

    with pytest.raises(shared.typer.Exit) as e:
        shared.guard(boom(ConfigError("configs/x.yaml: field 'lr' must be > 0")))
    assert e.value.exit_code == 2
    # a genuine fault (a torch bug, a wrong shape deep inside) is not bad input: it propagates
    for fault in (RuntimeError("CUDA error: device-side assert"), ValueError("shapes (2,3) and (4,) mismatch")):
        with pytest.raises(type(fault)):
            shared.guard(boom(fault))
    # ...unless the body only reads flags
    with pytest.raises(shared.typer.Exit):
        shared.guard(boom(ValueError("--metrics: unknown metric 'fdi'")), options=True)
    # --debug lets the project's errors through with their traceback too
    monkeypatch.setitem(shared.state, "debug", True)
    with pytest.raises(ConfigError):
        shared.guard(boom(ConfigError("x")))


def test_project_error_classes_share_the_base_and_keep_their_builtin_bases() -> None:
    from irisbench.core.records import RunLockedError
    from irisbench.protocols.geneval import MetadataError
    from irisbench.suites import SuiteError
    from irisbench.train.rewards import UnknownRewardError

    for cls in (ConfigError, SuiteError, MetadataError, UnknownRewardError, UsageError):
        assert issubclass(cls, IrisbenchError) and issubclass(cls, ValueError)
    assert issubclass(RunLockedError, IrisbenchError) and issubclass(RunLockedError, RuntimeError)


def test_cli_bad_input_one_line_without_traceback_and_debug_shows_it(tmp_path: Path) -> None:
    bad = ["train", "--config", "iris-shapes", "--set", "lr=-1", "--out", str(tmp_path / "r")]
    result = runner.invoke(app, bad)
    assert result.exit_code == 2 and "lr must be > 0" in result.output and "Traceback" not in result.output
    debug = runner.invoke(app, ["--debug", *bad])
    assert debug.exit_code != 0 and isinstance(debug.exception, ConfigError)


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("irisbench ")


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["eval", "--help"], ["suites", "show", "--help"],
                                  ["report", "--help"]])
def test_help_has_no_type_noise(args: list[str]) -> None:
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for noise in ("<bool>", "<str>", "<int>", "<path>", "<float>", "<list"):
        assert noise not in result.output, (noise, result.output)


def test_dotted_overrides_set_one_entry_and_keep_the_rest() -> None:
    cfg = resolve_config("iris-shapes", ["policy_options.max_plan_tokens=1", "policy_options.top_k=5"])
    assert cfg.policy_options["max_plan_tokens"] == 1 and cfg.policy_options["top_k"] == 5
    no_plan = resolve_config("no-plan-shapes", [])
    assert no_plan.policy_options, "the no-plan preset sets policy_options"
    kept = resolve_config("no-plan-shapes", ["policy_options.extra=2"])
    assert kept.policy_options == {**no_plan.policy_options, "extra": 2}
    nested = resolve_config("iris-shapes", ["reward_options.nsc.pooling=modality"])
    assert nested.reward_options == {"nsc": {"pooling": "modality"}}
    with pytest.raises(ConfigError, match="not a mapping"):
        resolve_config("iris-shapes", ["lr.x=1"])
    with pytest.raises(ConfigError, match="Did you mean 'policy_options'"):
        resolve_config("iris-shapes", ["policy_option.max_plan_tokens=1"])


def test_key_value_and_did_you_mean_helpers() -> None:
    assert parse_key_value("lr=1e-3") == ("lr", 1e-3)
    assert parse_key_value("lr=1e-3", numbers=False) == ("lr", "1e-3")
    assert parse_key_value(" a = [1, 2]") == ("a", [1, 2])
    for bad in ("novalue", "=3"):
        with pytest.raises(UsageError, match="KEY=VALUE"):
            parse_key_value(bad, "--scorer-option")
    assert did_you_mean("genevla", ["geneval", "compbench"]) == " Did you mean 'geneval'?"
    assert did_you_mean("zzz", ["geneval"]) == ""


@pytest.mark.parametrize("command", ["report", "analyze"])
def test_report_and_analyze_refuse_to_write_into_a_run_folder(tmp_path: Path, command: str) -> None:
    run = make_run(tmp_path / "run", {(0, 0): True, (1, 0): False}, {0: "single_object", 1: "counting"})
    before = sorted(p.name for p in run.iterdir())
    result = runner.invoke(app, [command, str(run), "--out", str(run)])
    assert result.exit_code == 2, result.output
    assert "eval run folder" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in run.iterdir()) == before


def test_a_failed_command_leaves_no_empty_default_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "results" / "runs"
    # failing before anything is written, and after the run folder (marker, config, empty records) was made
    for args in (["eval", "--policy", "nosuch", "--limit", "1"], ["eval", "--cfg", "-1", "--limit", "1"],
                 ["probe", "--rewards", "nosuch", "--prompts", "2", "--g", "2"], ["analyze", str(tmp_path)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "Traceback" not in result.output, (args, result.output)
        assert not runs.is_dir() or not any(runs.iterdir()), (args, sorted(p.name for p in runs.iterdir()))
    # a folder holding output, or an --out folder that existed before, is kept
    kept = shared.default_out("kept")
    (kept / "records.jsonl").write_text('{"prompt_index": 0}\n')
    empty = shared.default_out("empty")
    (empty / "run.json").write_text("{}")
    shared.discard_unused_folders()
    assert kept.is_dir() and not empty.exists()
    given = tmp_path / "given"  # made by this invocation, left without output: removed
    result = runner.invoke(app, ["eval", "--cfg", "-1", "--limit", "1", "--out", str(given)])
    assert result.exit_code == 2 and not given.exists()
    given.mkdir()  # the user's own folder: kept, with what the failed run wrote into it
    result = runner.invoke(app, ["eval", "--cfg", "-1", "--limit", "1", "--out", str(given)])
    assert result.exit_code == 2 and (given / "run.json").is_file()


def test_experiment_refuses_an_unknown_preset_before_evaluating_the_base(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    result = runner.invoke(app, ["experiment", "--method", "x=nosuch", "--out", str(out), "--no-publish-readme"])
    assert result.exit_code == 2 and "unknown config preset 'nosuch'" in result.output
    assert not out.exists()


def test_a_corrupt_results_file_is_one_line_naming_file_line_and_column(tmp_path: Path) -> None:
    from irisbench.core.errors import read_json

    run = make_run(tmp_path / "run", {(0, 0): True, (1, 0): False}, {0: "single_object", 1: "counting"})
    (run / "results.json").write_text('{"suite": "geneval",\n  "scores": {oops}\n')
    for args in (["metrics", str(run), "--metrics", "clip"], ["report", f"a={run}", "--out", str(tmp_path / "rep")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "Traceback" not in result.output, (args, result.output)
        assert "results.json:2:14: not valid JSON" in " ".join(result.output.split()), (args, result.output)
    with pytest.raises(UsageError, match=r"nothing\.json: JSON file not found"):
        read_json(tmp_path / "nothing.json")
    (tmp_path / "ok.json").write_bytes(b'\xef\xbb\xbf{"a": [1, 2]}')
    assert read_json(tmp_path / "ok.json") == {"a": [1, 2]}
