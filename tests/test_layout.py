"""The repository's layout: suites/ at the top level (found in a checkout and in a built wheel), the
published experiment under results/experiment/ with tidy tables, user run folders under results/runs/."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import tomllib
from report_fixtures import make_run

from irisbench.core.errors import IrisbenchError
from irisbench.core.stats import geneval_summary
from irisbench.experiment.summary import README_BEGIN, README_END, publish
from irisbench.report.tidy import (
    COLUMNS,
    RECORD_COLUMNS,
    RUN_COLUMNS,
    record_rows,
    tidy_rows,
    write_records,
    write_tidy,
)

ROOT = Path(__file__).resolve().parents[1]


def test_suites_are_read_from_the_top_level_folder() -> None:
    from irisbench.suites import load_suite, suite_names, suites_folder

    assert Path(str(suites_folder())) == ROOT / "suites"
    assert {"geneval", "compbench"} <= set(suite_names())
    assert load_suite("geneval").path == "geneval.yaml"
    assert not list((ROOT / "irisbench" / "suites").glob("*.yaml"))  # one home


def test_every_subpackage_is_listed_for_the_wheel() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "irisbench").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
    assert "irisbench._suites" in listed


@pytest.mark.slow
def test_built_wheel_carries_the_suites_and_reads_them(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("irisbench-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        assert {"irisbench/_suites/geneval.yaml", "irisbench/_suites/compbench.yaml"} <= set(z.namelist())
        z.extractall(tmp_path / "site")
    code = "from irisbench.suites import suite_names, suites_folder; print(suites_folder(), suite_names())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert "_suites" in out.stdout and "'geneval'" in out.stdout, out.stdout


def test_gitignore_keeps_results_tracked_but_not_run_folders() -> None:
    def ignored(path: str) -> bool:
        return subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", path]).returncode == 0

    if subprocess.run(["git", "-C", str(ROOT), "rev-parse"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    assert ignored("results/runs/eval-geneval-x/results.json")
    assert not ignored("results/experiment/scores.csv")
    assert not ignored("suites/geneval.yaml")


def _tiny_experiment(tmp_path: Path) -> dict[str, dict[str, Path]]:
    tags = {0: "single_object", 1: "single_object", 2: "counting"}
    evals: dict[str, dict[str, Path]] = {}
    for label, right in (("base", {0}), ("iris-nsc (best val)", {0, 1, 2})):
        evals[label] = {}
        for split in ("val", "test"):
            correct = {(p, s): p in right and s == 0 for p in tags for s in range(2)}
            evals[label][f"geneval/{split}"] = make_run(tmp_path / f"{label[:4]}-{split}", correct, tags,
                                                       split=split, policy=label)
    return evals


def test_tidy_rows_one_per_run_suite_split_tag_with_hand_checked_scores(tmp_path: Path) -> None:
    evals = _tiny_experiment(tmp_path)
    rows = tidy_rows(evals)
    assert len(rows) == 2 * 2 * 3  # runs x splits x (overall + 2 tags)
    keys = {(r["run"], r["suite"], r["split"], r["tag"]) for r in rows}
    assert len(keys) == len(rows)
    by = {(r["run"], r["split"], r["tag"]): r for r in rows}
    # base: prompt 0 has 1 of 2 images right; single_object = 1/4, counting = 0/2, overall = (1/4 + 0) / 2
    assert by[("base", "test", "single_object")]["score"] == pytest.approx(0.25)
    assert by[("base", "test", "counting")]["score"] == 0.0
    assert by[("base", "test", "overall")]["score"] == pytest.approx(0.125)
    assert by[("iris-nsc (best val)", "val", "overall")]["score"] == pytest.approx(0.5)
    r = by[("base", "test", "single_object")]
    assert (r["n_images"], r["n_prompts"]) == (4, 2) and r["ci_low"] <= r["score"] <= r["ci_high"]


def test_tidy_rows_carry_what_a_label_stands_for(tmp_path: Path) -> None:
    evals = _tiny_experiment(tmp_path)
    meta = {"iris-nsc (best val)": {"method": "iris-nsc", "checkpoint": "best val", "training_seed": 2, "step": 40}}
    rows = tidy_rows(evals, runs=meta)
    for r in rows:
        want = meta.get(r["run"], {})
        assert [r[c] for c in RUN_COLUMNS] == [want.get(c) for c in RUN_COLUMNS]
    paths = write_tidy(evals, tmp_path / "out", runs=meta)
    csv, parquet = pd.read_csv(paths["csv"]), pd.read_parquet(paths["parquet"])
    assert str(parquet["training_seed"].dtype) == "Int64" and parquet["training_seed"].dropna().tolist() == [2] * 6
    assert csv.loc[csv.run == "base", "training_seed"].isna().all()
    with pytest.raises(IrisbenchError, match="seed"):
        tidy_rows(evals, runs={"base": {"seed": 1}})


def test_published_records_re_derive_every_score_and_interval(tmp_path: Path) -> None:
    """The per-image table holds every image of every run, with what its label stands for, and the bootstrap
    over its rows gives each run's published score and interval again."""
    evals = _tiny_experiment(tmp_path)
    meta = {"iris-nsc (best val)": {"method": "iris-nsc", "checkpoint": "best val", "training_seed": 2, "step": 40}}
    table = pd.read_parquet(write_records(evals, tmp_path / "out", runs=meta))
    assert list(table.columns) == list(RECORD_COLUMNS) and len(table) == len(record_rows(evals)) == 2 * 2 * 6
    assert set(table.loc[table.run == "iris-nsc (best val)", "training_seed"]) == {2}
    for label, folders in evals.items():
        for key, folder in folders.items():
            split = key.split("/")[1]
            rows = table[(table.run == label) & (table.split == split)].to_dict("records")
            published = json.loads((folder / "results.json").read_text())["scores"]["overall"]
            again = geneval_summary(rows, n_resamples=200, seed=0)["overall"]
            assert [again[k] for k in ("score", "ci_low", "ci_high")] == pytest.approx(
                [published[k] for k in ("score", "ci_low", "ci_high")])


def test_publish_writes_tidy_tables_and_links_plots_under_results(tmp_path: Path) -> None:
    evals = _tiny_experiment(tmp_path / "runs")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_BEGIN}\nold\n{README_END}\ntail\n")
    plot = tmp_path / "runs" / "scores-geneval-test.png"
    plot.write_bytes(b"\x89PNG fake")
    tables = publish(readme, "| table |", {"plots": [str(plot)]}, {}, tmp_path / "runs", evals)
    folder = tmp_path / "results" / "experiment"
    assert tables == {"csv": folder / "scores.csv", "parquet": folder / "scores.parquet",
                      "records": folder / "records.parquet"}
    csv, parquet = pd.read_csv(tables["csv"]), pd.read_parquet(tables["parquet"])
    assert list(csv.columns) == list(COLUMNS) and len(csv) == len(parquet) == 12
    assert parquet.loc[(parquet.run == "base") & (parquet.split == "test") & (parquet.tag == "overall"),
                       "score"].item() == pytest.approx(0.125)
    assert not any(f.startswith("/") for f in csv.folder)  # run folders relative to the experiment folder
    assert (folder / plot.name).read_bytes() == plot.read_bytes()
    text = readme.read_text()
    assert "old" not in text and "tail" in text and "](results/experiment/scores-geneval-test.png)" in text
    assert "results/experiment/scores.csv" in text and "docs/experiment" not in text
    assert "results/experiment/records.parquet" in text and len(pd.read_parquet(tables["records"])) == 24


def test_tidy_refuses_an_unfinished_run(tmp_path: Path) -> None:
    from irisbench.core.errors import IrisbenchError

    (tmp_path / "empty").mkdir()
    with pytest.raises(IrisbenchError, match="results.json"):
        write_tidy({"x": {"geneval/test": tmp_path / "empty"}}, tmp_path / "out")


def test_default_run_folders_go_under_results_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from irisbench.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["eval", "--policy", "oracle", "--limit", "1", "-n", "1", "--split", "val"])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "results" / "runs").iterdir()
    assert run.name.startswith("eval-geneval-oracle") and json.loads((run / "run.json").read_text())["kind"] == "eval"
