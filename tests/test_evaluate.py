"""End-to-end evaluation: records, results, resume after kill -9, batch-size invariance, locks, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from irisbench.cli import app
from irisbench.evaluation.evaluate import EvalOptions, evaluate

runner = CliRunner()


def _records(run: Path) -> list[dict]:
    lines = (run / "records.jsonl").read_text(encoding="utf-8").splitlines()
    return sorted((json.loads(x) for x in lines if x.strip()),
                  key=lambda r: (r["prompt_index"], r["sample_index"]))


def _strip(results: dict) -> dict:
    out = dict(results)
    out.pop("timing")
    out["counts"] = {k: v for k, v in out["counts"].items() if k not in ("resumed", "generated_now")}
    return out


@pytest.mark.slow
def test_oracle_and_random_bounds_on_full_test_split(tmp_path: Path) -> None:
    oracle = evaluate(EvalOptions(policy="oracle", save_images=False), tmp_path / "oracle", progress=False)
    assert oracle["counts"]["complete"] and oracle["counts"]["expected"] == oracle["counts"]["actual"]
    assert oracle["scores"]["overall"]["score"] >= 0.99
    rnd = evaluate(EvalOptions(policy="random", save_images=False), tmp_path / "random", progress=False)
    assert rnd["scores"]["overall"]["score"] <= 0.15
    lo, hi = rnd["scores"]["overall"]["ci_low"], rnd["scores"]["overall"]["ci_high"]
    assert lo <= rnd["scores"]["overall"]["score"] <= hi


def test_records_and_results_schema(tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = evaluate(EvalOptions(policy="oracle", limit=6, images_per_prompt=2), run, progress=False)
    recs = _records(run)
    assert len(recs) == 12 == res["counts"]["actual"] == res["counts"]["expected"]
    assert {(r["prompt_index"], r["sample_index"]) for r in recs} == {(i, j) for i in range(6) for j in range(2)}
    for r in recs:
        assert (run / r["image"]).is_file()
        assert json.loads(r["metadata"])["prompt"] == r["prompt"]
        assert isinstance(r["correct"], bool)
    assert (run / "records.parquet").is_file()
    saved = json.loads((run / "results.json").read_text())
    assert saved["prompts"]["n_prompts"] == 6 and saved["prompts"]["limit"] == 6
    assert saved["prompts"]["world"] == "shapes" and len(saved["prompts"]["sha256"]) == 64
    import pandas as pd

    df = pd.read_parquet(run / "records.parquet")
    assert len(df) == 12 and df["correct"].sum() == sum(r["correct"] for r in recs)


def test_records_do_not_depend_on_batch_size(tmp_path: Path) -> None:
    a = evaluate(EvalOptions(policy="random", limit=10, batch_size=3, save_images=False), tmp_path / "a",
                 progress=False)
    b = evaluate(EvalOptions(policy="random", limit=10, batch_size=64, save_images=False), tmp_path / "b",
                 progress=False)
    assert _records(tmp_path / "a") == _records(tmp_path / "b")
    assert _strip(a) == _strip(b)


def test_val_and_test_splits_never_share_seeds(tmp_path: Path) -> None:
    evaluate(EvalOptions(policy="random", split="val", limit=5, save_images=False), tmp_path / "v", progress=False)
    evaluate(EvalOptions(policy="random", split="test", limit=5, save_images=False), tmp_path / "t", progress=False)
    assert not {r["seed"] for r in _records(tmp_path / "v")} & {r["seed"] for r in _records(tmp_path / "t")}


def test_every_image_of_a_prompt_gets_its_own_seed_and_draw(tmp_path: Path) -> None:
    """Per-image seeds come from (base, suite/split, prompt, SAMPLE): images of one prompt differ."""
    run = tmp_path / "run"
    evaluate(EvalOptions(policy="random", limit=3, images_per_prompt=3, batch_size=4), run, progress=False)
    recs = _records(run)
    for p in range(3):
        mine = [r for r in recs if r["prompt_index"] == p]
        assert len({r["seed"] for r in mine}) == 3, mine
        assert len({(run / r["image"]).read_bytes() for r in mine}) == 3, "two samples of a prompt drew the same image"
    assert len({r["seed"] for r in recs}) == 9


# The child evaluates through a policy that stalls inside its sample() call after ``stall_after`` batches
# (printing "stalled"), so the parent kills it at a known point in the middle of the run, never after it.
_CHILD = """
import sys, time
from irisbench.evaluation.evaluate import EvalOptions, evaluate
from irisbench.policies import load_policy

class Stalling:
    def __init__(self, inner, stall_after):
        self.inner, self.calls, self.stall_after = inner, 0, stall_after
    def __getattr__(self, name):
        return getattr(self.inner, name)
    def sample(self, *args, **kwargs):
        if self.calls == self.stall_after:
            print("stalled", flush=True)
            time.sleep(600)
        self.calls += 1
        return self.inner.sample(*args, **kwargs)

evaluate(EvalOptions(policy="oracle", limit=60, batch_size=8), sys.argv[1],
         policy=Stalling(load_policy("oracle"), int(sys.argv[2])), progress=False)
"""


@pytest.mark.slow
def test_resume_after_kill_9_matches_uninterrupted_run(tmp_path: Path) -> None:
    ref = evaluate(EvalOptions(policy="oracle", limit=60, batch_size=8), tmp_path / "ref", progress=False)
    run = tmp_path / "crashy"
    seen = []
    for stall_after in (2, 3):  # the second child resumes the first's records, then is killed too
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(run), str(stall_after)], stdout=subprocess.PIPE,
                                text=True)
        try:
            assert proc.stdout.readline().strip() == "stalled"
            seen.append(len(_records(run)))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    # each kill landed mid-run: some records written, not all (60 prompts x 4 images, 8 images per batch)
    assert seen == [16, 40] and all(0 < n < 240 for n in seen)
    assert not (run / "results.json").exists()
    res = evaluate(EvalOptions(policy="oracle", limit=60, batch_size=8), run, progress=False)
    assert res["counts"]["resumed"] == 40 and res["counts"]["generated_now"] == 200
    assert _records(run) == _records(tmp_path / "ref")
    assert _strip(res) == _strip(ref)
    assert res["counts"]["complete"]


def test_second_process_on_same_run_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    evaluate(EvalOptions(policy="oracle", limit_per_tag=1, images_per_prompt=1), run, progress=False)
    from irisbench.core.records import RunLockedError
    from irisbench.core.runs import RunDir

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom irisbench.core.runs import RunDir\n"
        "with RunDir.open(sys.argv[1]).lock():\n    print('locked', flush=True)\n    time.sleep(30)\n"
    ), str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError):
            evaluate(EvalOptions(policy="oracle", limit_per_tag=1, images_per_prompt=1), run, progress=False)
        result = runner.invoke(app, ["eval", "--policy", "oracle", "--limit", "1", "-n", "1", "--out", str(run)])
        assert result.exit_code != 0 and "lock" in result.output.lower()
    finally:
        holder.kill()
        holder.wait()
    assert RunDir.open(run)


def test_open_world_compbench_without_prompt_files_is_refused_before_any_work(tmp_path: Path) -> None:
    class OpenPolicy:
        name, world = "fake-open", "open"

        def describe(self) -> dict:
            return {"name": self.name}

    with pytest.raises(ValueError, match="not shipped"):
        evaluate(EvalOptions(suite="compbench"), tmp_path / "x", policy=OpenPolicy(), progress=False)
    assert not (tmp_path / "x").exists()


# ---- the command line ------------------------------------------------------------------------------


def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


GOOD = '{"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"}'


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (GOOD + "\n{not json\n", ["prompts.jsonl:2"]),
        ('{"include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"}\n',
         ["prompts.jsonl:1", "tag"]),
        ('{"tag": "single_object", "prompt": "a photo of a circle"}\n', ["prompts.jsonl:1", "include"]),
        ('{"tag": "single_object", "include": [{"class": "circle", "count": 1}]}\n', ["prompts.jsonl:1", "prompt"]),
        ('{"tag": "bogus", "include": [{"class": "circle", "count": 1}], "prompt": "x"}\n',
         ["prompts.jsonl:1", "bogus"]),
        ('{"tag": "counting", "include": [{"class": "circle", "count": 0}], "prompt": "x"}\n',
         ["prompts.jsonl:1", "count"]),
        ('{"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "teal"}], "prompt": "x"}\n',
         ["prompts.jsonl:1", "teal"]),
        ('{"tag": "position", "include": [{"class": "circle", "count": 1, "position": ["left of", 3]}], '
         '"prompt": "x"}\n', ["prompts.jsonl:1", "position"]),
        ("", ["prompts.jsonl", "empty"]),
        (b"\xff\xfe\x00garbage\n", ["prompts.jsonl", "UTF-8"]),
    ],
)
def test_bad_prompt_files_fail_clearly(tmp_path: Path, content: str | bytes, expected: list[str]) -> None:
    bad = _write(tmp_path / "prompts.jsonl", content)
    out = tmp_path / "run"
    result = runner.invoke(app, ["eval", "--policy", "oracle", "--prompts", str(bad), "--out", str(out)])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    for word in expected:
        assert word.lower() in result.output.lower(), result.output
    assert not (out / "results.json").exists()


def test_good_prompt_file_evaluates(tmp_path: Path) -> None:
    good = _write(tmp_path / "prompts.jsonl", GOOD + "\n")
    out = tmp_path / "run"
    result = runner.invoke(app, ["eval", "--policy", "oracle", "--prompts", str(good), "--out", str(out)])
    assert result.exit_code == 0, result.output
    res = json.loads((out / "results.json").read_text())
    assert res["counts"]["actual"] == 4 and res["scores"]["overall"]["score"] == 1.0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["eval", "--suite", "genevla"], "did you mean 'geneval'"),
        (["eval", "--policy", "orcale"], "did you mean 'oracle'"),
        (["eval", "--policy", "oracle", "--split", "train"], "no split 'train'"),
        (["eval", "--policy", "janus-pro"], "needs --model"),
        (["eval", "--policy", "oracle", "-n", "0"], ">= 1"),
        (["suites", "show", "nope"], "unknown suite"),
    ],
)
def test_bad_names_and_options_fail_clearly(tmp_path: Path, args: list[str], needle: str) -> None:
    result = runner.invoke(app, [*args, *(["--out", str(tmp_path / "o")] if args[0] == "eval" else [])])
    assert result.exit_code != 0
    assert needle.lower() in result.output.lower(), result.output
    assert "Traceback" not in result.output


def test_a_folder_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("my thesis")
    result = runner.invoke(app, ["eval", "--policy", "oracle", "--limit", "1", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "not" in result.output.lower() and "run" in result.output.lower()
    assert (tmp_path / "notes.txt").read_text() == "my thesis"


# ---- T2I-CompBench-style suite -----------------------------------------------------------------------


def test_compbench_shapes_suite_scores_oracle_above_random(tmp_path: Path) -> None:
    oracle = evaluate(EvalOptions(policy="oracle", suite="compbench", limit=60, save_images=False),
                      tmp_path / "o", progress=False)
    rnd = evaluate(EvalOptions(policy="random", suite="compbench", limit=60, save_images=False),
                   tmp_path / "r", progress=False)
    tags = oracle["scores"]["tags"]
    assert set(tags) <= {"color", "spatial", "numeracy"} and oracle["protocol"] == "compbench"
    assert oracle["scores"]["overall"]["score"] > rnd["scores"]["overall"]["score"] + 0.3
    assert oracle["scores"]["mean of 6 (IRIS-style)"] is None  # texture etc. do not exist in the shapes world
    recs = _records(tmp_path / "o")
    assert all(0.0 <= r["score"] <= 1.0 for r in recs) and all(r["correct"] is None for r in recs)


def test_compbench_rule_prompts_follow_the_metadata() -> None:
    from irisbench.world.compbench_items import rule_prompt

    assert rule_prompt({"tag": "color_attr", "include": [
        {"class": "circle", "count": 1, "color": "orange"}, {"class": "square", "count": 1, "color": "blue"}],
        "prompt": "a photo of an orange circle and a blue square"}) == "an orange circle and a blue square"
    assert rule_prompt({"tag": "position", "include": [
        {"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["above", 0]}],
        "prompt": "a photo of a circle above a square"}) == "a circle on the top of a square"
    assert rule_prompt({"tag": "counting", "include": [{"class": "diamond", "count": 3}],
                        "exclude": [{"class": "diamond", "count": 4}],
                        "prompt": "a photo of three diamonds"}) == "three diamonds"


def test_compbench_open_world_reads_the_official_files(reference: Path) -> None:
    from irisbench.suites import SuiteError, load_suite, resolve_prompts

    suite = load_suite("compbench")
    with pytest.raises(SuiteError, match="not shipped"):
        resolve_prompts(suite, "open")
    items, prov = resolve_prompts(suite, "open", prompts_file=reference / "t2i-compbench")
    # the six classic categories and numeracy (++); 3d_spatial needs a depth model the scorer does not have
    assert len(items) == 7 * 300 and prov["n_prompts"] == 2100
    assert {it["tag"] for it in items} == {"color", "shape", "texture", "spatial", "non_spatial", "complex",
                                           "numeracy"}


@pytest.mark.slow
def test_two_processes_give_the_same_records_and_scores(tmp_path: Path) -> None:
    args = ["eval", "--policy", "random", "--limit", "4", "--batch-size", "5", "--no-save-images"]
    single = runner.invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert single.exit_code == 0, single.output
    torchrun = Path(sys.executable).with_name("torchrun")
    code = "from irisbench.cli import main; main()"
    script = tmp_path / "cli.py"
    script.write_text(code)
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", str(script), *args,
                           "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _records(tmp_path / "one") == _records(tmp_path / "two")
    assert not list((tmp_path / "two").glob("records.rank-*.jsonl"))
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["counts"]["processes"] == 2 and two["counts"]["complete"]
    assert one["scores"] == two["scores"]


def test_scorer_options_reach_the_scorer_and_typos_are_refused(tmp_path: Path) -> None:
    from irisbench.core.registry import SCORERS, Entry
    from irisbench.evaluation.evaluate import EvalError, _make_scorer

    entry = Entry("m2f", "irisbench.scorers.geneval_real:Mask2FormerScorer", "test")
    with pytest.raises(EvalError, match="detector_modle"):
        _make_scorer(entry, {"detector_modle": "/models/m2f"})
    assert "detector_model" in str(pytest.raises(EvalError, _make_scorer, entry, {"x": 1}).value)
    shapes = _make_scorer(SCORERS.get("shapes-exact"), {})
    assert shapes.name == "shapes-exact"
    result = runner.invoke(app, ["eval", "--policy", "oracle", "--limit", "1", "--scorer-option", "device=cpu",
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code != 0 and "has no option" in result.output
