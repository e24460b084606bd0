"""The one-command experiment, end to end at toy scale (a tiny random policy, a few steps, two training seeds),
and its seed-level statistics on hand-made eval runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from report_fixtures import make_run

from irisbench.core.errors import UsageError
from irisbench.experiment.run import ExperimentConfig, parse_seeds, run_experiment
from irisbench.experiment.summary import README_BEGIN, README_END
from irisbench.report.seeds import (
    MEAN,
    SEED_COLUMNS,
    SeedEval,
    seed_deltas,
    seed_markdown,
    seed_rows,
    seed_verdicts,
    write_seed_csv,
)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from irisbench.policies.shapes_lm import ShapesLMPolicy
    from irisbench.world.tokenizer import fit_patch_tokenizer

    pol = ShapesLMPolicy.create(fit_patch_tokenizer(n_scenes=1500, seed=0), hidden_size=32, num_layers=1,
                                num_heads=2, intermediate_size=64, seed=0)
    path = tmp_path_factory.mktemp("base") / "policy"
    pol.save(path)
    return path


def _overall(folder: str | Path) -> float:
    return json.loads((Path(folder) / "results.json").read_text())["scores"]["overall"]["score"]


def _csv_matches_entries(csv: Path, entries: list[dict[str, Any]]) -> None:
    """Every row of seed_deltas.csv is one seed (or the mean) of one entry of summary.json, and back."""
    df = pd.read_csv(csv, dtype={"seed": str, "step": str})
    assert list(df.columns) == list(SEED_COLUMNS)
    assert len(df) == sum(len(e["seeds"]) + 1 for e in entries)
    for e in entries:
        sub = df[(df.method == e["method"]) & (df.checkpoint == e["checkpoint"]) & (df.suite == e["suite"])
                 & (df.split == e["split"])].set_index("seed")
        for s in e["seeds"]:
            row = sub.loc[str(s["seed"])]
            assert (row["delta"], row["ci_low"], row["ci_high"]) == pytest.approx((s["delta"], s["ci_low"],
                                                                                     s["ci_high"]))
            assert row["label"] == s["label"] and str(row["step"]) == str(s["step"])  # written as an integer
        mean = sub.loc[MEAN]
        assert mean["delta"] == pytest.approx(e["mean"]["delta"]) and mean["n_seeds"] == len(e["seeds"])
        for key in ("ci_low", "ci_high"):
            assert (math.isnan(mean[key]) if e["mean"][key] is None else mean[key] == pytest.approx(e["mean"][key]))


@pytest.mark.slow
def test_experiment_runs_seeds_resumes_and_publishes(tiny_base: Path, tmp_path: Path) -> None:
    from irisbench.core.stats import mean_t_interval, mean_t_interval_plus
    from irisbench.experiment.run import selected_steps

    cfg = ExperimentConfig(methods={"iris-nsc": "iris-shapes", "null-random": "null-shapes"}, steps=2,
                           checkpoint_every=1, suites=("geneval", "compbench"), val_images_per_prompt=1,
                           base=str(tiny_base), eval_limit=6, eval_images_per_prompt=2, seeds=(0, 1),
                           jobs=2, threads=1,  # two worker processes (irisbench.experiment.parallel)
                           train_overrides={"prompts_per_step": 2, "num_generations": 2, "eval_prompts": 12})
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{README_BEGIN}\nOLD-BLOCK\n{README_END}\n\ntail\n")
    out = tmp_path / "exp"
    summary = run_experiment(out, cfg, publish_readme=readme)

    # layout: one training run per method and seed, selected on its own val evaluations
    assert set(summary["selection"]) == {"iris-nsc", "null-random"}
    for method in ("iris-nsc", "null-random"):
        assert not (out / "train" / method / "run.json").exists()
        assert set(summary["selection"][method]) == {"seed-0", "seed-1"}
        for seed in (0, 1):
            run = out / "train" / method / f"seed-{seed}"
            assert (run / "run.json").is_file() and (run / "checkpoints" / "step-2").is_dir()
            best, last = selected_steps(run)
            assert summary["selection"][method][f"seed-{seed}"] == {"best_val_step": best, "last_step": last}
            assert json.loads((run / "run.json").read_text())["kind"] == "train"
        # the two seeds trained differently (the training seed reaches the sampler)
        assert (out / "train" / method / "seed-0" / "train" / "metrics.jsonl").read_text() != \
            (out / "train" / method / "seed-1" / "train" / "metrics.jsonl").read_text()
    evals = summary["evals"]
    for label in ("base", "oracle", "random", "iris-nsc (last)", "null-random (best val)", "iris-nsc s1 (best val)",
                  "null-random s1 (last)"):
        assert label in evals, evals.keys()
    splits = {"geneval/val", "geneval/test", "compbench/val", "compbench/test"}
    # the first seed's best also on val (the val columns); every best-val checkpoint and the base also on the seen
    # split (RL-training texts)
    assert set(evals["iris-nsc (best val)"]) == splits | {"geneval/seen"}
    assert set(evals["base"]) == splits | {"geneval/seen"}
    assert set(evals["iris-nsc s1 (best val)"]) == {"geneval/test", "compbench/test", "geneval/seen"}
    for label in ("iris-nsc (last)", "iris-nsc s1 (last)"):
        assert set(evals[label]) == {"geneval/test", "compbench/test"}  # the others on test only
    best1 = summary["selection"]["iris-nsc"]["seed-1"]["best_val_step"]
    assert Path(evals["iris-nsc s1 (best val)"]["geneval/test"]) == \
        out / "eval" / "iris-nsc" / "seed-1" / f"step-{best1}" / "geneval-test"
    for method in ("iris-nsc", "null-random"):  # last == best: the same folders, not a second evaluation
        for seed, tag in ((0, ""), (1, " s1")):
            sel = summary["selection"][method][f"seed-{seed}"]
            same = evals[f"{method}{tag} (last)"]["geneval/test"] == evals[f"{method}{tag} (best val)"]["geneval/test"]
            assert same == (sel["best_val_step"] == sel["last_step"])
    assert (out / "report" / "report.html").is_file() and (out / "analysis" / "summary.json").is_file()
    report_labels = set(pd.read_csv(out / "report" / "report.csv")["label"])
    assert "iris-nsc (best val)" in report_labels and "iris-nsc s1 (best val)" not in report_labels

    # seed-level statistics: per seed the paired delta vs the base, across seeds the t-interval of their mean
    entries = summary["seed_deltas"]
    assert {(e["method"], e["checkpoint"], e["suite"]) for e in entries} == {
        (m, k, s) for m in ("iris-nsc", "null-random") for k in ("best val", "last") for s in ("geneval", "compbench")}
    report = pd.read_csv(out / "report" / "report.csv")
    for e in entries:
        assert e["split"] == "test" and [s["seed"] for s in e["seeds"]] == [0, 1]
        key = f"{e['suite']}/test"
        for s in e["seeds"]:
            assert s["delta"] == pytest.approx(_overall(evals[s["label"]][key]) - _overall(evals["base"][key]))
            assert s["ci_low"] <= s["ci_high"] and s["mode"] == "paired"
        m = mean_t_interval([s["delta"] for s in e["seeds"]])
        assert (e["mean"]["delta"], e["mean"]["ci_low"], e["mean"]["ci_high"]) == pytest.approx(
            (m["mean"], m["ci_low"], m["ci_high"]))
        # seed 0's per-prompt interval is the report's (the same paired bootstrap)
        s0 = e["seeds"][0]
        row = report[(report.label == s0["label"]) & (report.group == key) & (report.metric == "overall")]
        assert row["delta_ci_low"].item() == pytest.approx(s0["ci_low"], abs=1e-5)
    _csv_matches_entries(out / "seed_deltas.csv", entries)
    # iris-nsc relative to the null control: the difference of the across-seed means, Welch t (scipy's)
    from scipy import stats as sps

    assert summary["null_methods"] == ["null-random"]
    rows = summary["vs_null"]
    assert {(r["method"], r["null"], r["checkpoint"], r["suite"]) for r in rows} == {
        ("iris-nsc", "null-random", k, s) for k in ("best val", "last") for s in ("geneval", "compbench")}
    by_key = {(e["method"], e["checkpoint"], e["suite"]): [s["delta"] for s in e["seeds"]] for e in entries}
    for r in rows:
        a, b = by_key[("iris-nsc", r["checkpoint"], r["suite"])], by_key[("null-random", r["checkpoint"], r["suite"])]
        assert r["diff"] == pytest.approx(sum(a) / 2 - sum(b) / 2) and (r["n_method"], r["n_null"]) == (2, 2)
        if r["se"]:
            ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
            assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high))
        assert r["images_per_prompt"] == 2
    vs_csv = pd.read_csv(out / "vs_null.csv")
    assert len(vs_csv) == len(rows) and vs_csv["diff"].tolist() == pytest.approx([r["diff"] for r in rows])
    md = (out / "summary.md").read_text()
    assert "Effect relative to the null control `null-random` (null-shapes) on test, 2 images per prompt" in md
    assert "| iris-nsc | best val | geneval |" in md and "Verdicts relative to the null control" in md
    # every score says how many images per prompt it is over: the base 8 (shared by every method and seed), the rest 2
    assert "Overall scores with 95% CIs (cluster bootstrap over prompts), images per prompt in each row:" in md
    assert "| base | 2/8 | " in md and "| oracle | 2 | " in md and "| iris-nsc s1 (best val) | 2 | " in md
    assert "*best val* checkpoints on test, 2 images per prompt, the base 8:" in md
    assert "the checkpoints 2 and the base 2/8 images per prompt" in md  # the base: 2 on val, 8 on test
    for e in entries:  # the base's own error is carried into a second interval, beside the Student-t one
        assert (e["images_per_prompt"], e["base_images_per_prompt"]) == (2, 8) and e["base_se"] > 0
        w = mean_t_interval_plus([s["delta"] for s in e["seeds"]], e["base_se"], e["base_se_df"])
        assert (e["mean"]["ci_low_with_base"], e["mean"]["ci_high_with_base"]) == pytest.approx(
            (w["ci_low"], w["ci_high"]))
        assert e["mean"]["ci_high_with_base"] - e["mean"]["ci_low_with_base"] >= \
            e["mean"]["ci_high"] - e["mean"]["ci_low"]
    for key in ("geneval/test", "compbench/test", "geneval/seen"):
        assert json.loads((Path(evals["base"][key]) / "results.json").read_text())["images_per_prompt"] == 8
    for key in ("geneval/val", "compbench/val"):  # the base's val columns only sit beside the first seed's val
        assert json.loads((Path(evals["base"][key]) / "results.json").read_text())["images_per_prompt"] == 2
    assert "in-training val evaluations (1 image per prompt; ties: earliest)" in md
    assert "mean across seeds [95% CI across seeds, Student t]" in md and "across 2 seeds" in md
    assert all(v in md for v in summary["seed_verdicts"]) and len(summary["seed_verdicts"]) == len(entries)
    # seen vs unseen: per seed the delta on the seen split and on test, their gap paired by seed
    seen_rows = summary["seen_unseen"]
    assert {(r["method"], r["checkpoint"], r["suite"]) for r in seen_rows} == {
        (m, "best val", "geneval") for m in ("iris-nsc", "null-random")}
    for r in seen_rows:
        labels = [f"{r['method']}{t} (best val)" for t in ("", " s1")]
        d_seen = [_overall(evals[lab]["geneval/seen"]) - _overall(evals["base"]["geneval/seen"]) for lab in labels]
        d_test = [_overall(evals[lab]["geneval/test"]) - _overall(evals["base"]["geneval/test"]) for lab in labels]
        assert r["seen_seed_deltas"] == pytest.approx(d_seen) and r["unseen_seed_deltas"] == pytest.approx(d_test)
        g = mean_t_interval([a - b for a, b in zip(d_seen, d_test, strict=True)])
        assert (r["gap"], r["gap_ci_low"], r["gap_ci_high"]) == pytest.approx((g["mean"], g["ci_low"], g["ci_high"]))
    assert len(pd.read_csv(out / "seen_unseen.csv")) == len(seen_rows)
    assert "Seen vs unseen prompts" in md and "| seen (RL-training texts) | unseen (test) | seen − unseen |" in md
    # the table in summary.md is the numbers of the eval runs
    assert f"{_overall(evals['oracle']['geneval/test']):.3f}" in md
    # the val curve: the base at step 0, then every in-training val evaluation of every method and seed, and the
    # best-val step is the curve's first maximum
    curve = pd.read_csv(out / "curve.csv")
    assert curve.iloc[0][["method", "step", "split"]].tolist() == ["base", 0, "val"]
    assert curve.iloc[0]["score"] == pytest.approx(_overall(evals["base"]["geneval/val"]))
    runs = curve[curve.method != "base"]
    assert sorted(zip(runs.method, runs.seed, runs.step, strict=True)) == sorted(
        (m, s, step) for m in ("iris-nsc", "null-random") for s in (0, 1) for step in (1, 2))
    for (method, seed), rows in runs.groupby(["method", "seed"]):
        assert summary["selection"][method][f"seed-{seed}"]["best_val_step"] == \
            int(rows.sort_values("step").loc[rows["score"].idxmax(), "step"])
        assert rows["score"].tolist() == pytest.approx(
            [_overall(out / "train" / method / f"seed-{seed}" / "eval" / "val" / f"step-{st}") for st in rows.step])
    assert "Val curve: geneval val overall at every in-training evaluation (1 image per prompt" in md

    text = readme.read_text()
    assert "OLD-BLOCK" not in text and "tail" in text and "best val" in text and "results/experiment/" in text
    assert "per-seed deltas" in text and "results/experiment/seed_deltas.csv" in text
    assert "results/experiment/vs_null.csv" in text and "| method − null-random [95% CI, Welch t] |" in text
    assert "results/experiment/seen_unseen.csv" in text
    assert (tmp_path / "results" / "experiment" / "vs_null.csv").read_text() == (out / "vs_null.csv").read_text()
    published = tmp_path / "results" / "experiment"
    assert (published / "training_dynamics.png").is_file() and (published / "scores.parquet").is_file()
    assert (published / "seed_deltas.csv").read_text() == (out / "seed_deltas.csv").read_text()
    assert (published / "curve.csv").read_text() == (out / "curve.csv").read_text() and "curve.csv" in text
    # the tidy table says what each label stands for: method, checkpoint, training seed and step
    scores = pd.read_parquet(published / "scores.parquet")  # integer columns with gaps stay integers there
    for (label, method, kind, seed), rows in scores.groupby(["run", "method", "checkpoint", "training_seed"]):
        sel = summary["selection"][method][f"seed-{seed}"]
        assert label.startswith(method) and f"({kind})" in label and (seed == 0) == (f" s{seed} " not in label)
        assert set(rows["step"]) == {sel["best_val_step"] if kind == "best val" else sel["last_step"]}
    assert scores.loc[scores.run == "null-random s1 (last)", "training_seed"].eq(1).all()
    # every published score says its images per prompt: the base's 8 where its deltas are read (test, seen) and 2 on
    # val, every other run's 2
    per_split = scores.groupby(["run", "split"])["images_per_prompt"].unique().map(list).to_dict()
    assert per_split == {(run, split): [8 if run == "base" and split in ("test", "seen") else 2]
                         for run, split in per_split}
    unknown = scores.loc[scores.run.isin(["base", "oracle", "random"]), ["method", "training_seed", "step"]]
    assert len(unknown) and unknown.isna().all().all()
    assert scores.groupby(["run", "method", "checkpoint", "training_seed"]).ngroups == 8  # methods x kinds x seeds

    # re-running resumes: nothing is trained, opened for training or generated again
    metrics = {p: p.stat().st_mtime_ns for p in (out / "train").glob("*/seed-*/train/metrics.*")}
    assert len(metrics) >= 4
    again = run_experiment(out, cfg)
    assert again["selection"] == summary["selection"]
    assert {p: p.stat().st_mtime_ns for p in metrics} == metrics
    assert not list((out / "train").glob("*/seed-*/resumes.jsonl"))
    for folders in again["evals"].values():
        for folder in folders.values():
            assert json.loads((Path(folder) / "results.json").read_text())["counts"]["generated_now"] == 0
    assert again["seed_deltas"] == entries == json.loads((out / "summary.json").read_text())["seed_deltas"]
    # the wall time of a resumed experiment is the sum over its invocations, on the CPU named
    from irisbench.core.provenance import cpu_model

    t1, t2 = summary["timing"], again["timing"]
    assert (t1["invocations"], t2["invocations"]) == (1, 2) and t1["total_seconds"] == t1["seconds"]
    assert t2["total_seconds"] == pytest.approx(t1["seconds"] + t2["seconds"], abs=0.11)
    assert t2["cpu"] == cpu_model() != "" and t2["threads"] >= 1
    line = (out / "summary.md").read_text().strip().splitlines()[-1]
    assert line.startswith(f"Wall time: {t2['seconds'] / 60:.1f} min on {cpu_model()}, ATen capability ")
    assert f"; {t2['total_seconds'] / 60:.1f} min over the 2 invocations that reached a summary" in line


def _synthetic(tmp_path: Path) -> tuple[dict[str, Path], list[SeedEval]]:
    """A base right on prompt 0's first image (1/8) and three seeds right on every image of 2, 3 and 4 of
    the 4 prompts (4/8, 6/8, 8/8): deltas 0.375, 0.625, 0.875."""
    tags = {p: "single_object" for p in range(4)}

    def run(name: str, right: set[int], first_only: bool = False) -> Path:
        correct = {(p, s): p in right and (s == 0 or not first_only) for p in tags for s in range(2)}
        return make_run(tmp_path / name, correct, tags, policy=name)

    base = {"geneval/test": run("base", {0}, first_only=True)}
    evals = [SeedEval("iris-nsc", "best val", seed, 3, f"iris-nsc s{seed} (best val)",
                      {"geneval/test": run(f"s{seed}", set(range(n)))})
             for seed, n in ((0, 2), (1, 3), (2, 4))]
    return base, evals


def test_seed_deltas_hand_computed(tmp_path: Path) -> None:
    base, evals = _synthetic(tmp_path)
    (e,) = seed_deltas(base, evals, n_resamples=500)
    assert [s["delta"] for s in e["seeds"]] == pytest.approx([0.375, 0.625, 0.875])
    assert all(s["mode"] == "paired" and s["ci_low"] <= s["delta"] <= s["ci_high"] for s in e["seeds"])
    # mean 0.625, sd 0.25, half-width t(0.975, 2) * 0.25 / sqrt(3) = 0.62103
    half = 4.302653 * 0.25 / 3 ** 0.5
    assert (e["mean"]["delta"], e["mean"]["ci_low"], e["mean"]["ci_high"]) == pytest.approx(
        (0.625, 0.625 - half, 0.625 + half), abs=1e-6)
    assert e["mean"]["n_seeds"] == 3 and e["class"] == "improves"
    assert e["seeds_above_0"] == sum(s["ci_low"] > 0 for s in e["seeds"]) and e["seeds_below_0"] == 0
    rows = seed_rows([e])
    assert [r["seed"] for r in rows] == [0, 1, 2, MEAN]
    assert rows[-1]["delta"] == pytest.approx(0.625) and rows[-1]["n_seeds"] == 3
    _csv_matches_entries(write_seed_csv([e], tmp_path / "seed_deltas.csv"), json.loads(json.dumps([e])))
    md = seed_markdown([e])
    assert "| iris-nsc | geneval | s0: +0.375 [" in md and "+0.625 [+0.004, +1.246]" in md
    (v,) = seed_verdicts([e])
    assert v.startswith("iris-nsc (best val) improves on the base on geneval/test across 3 seeds: mean delta "
                        "+0.625 [+0.004, +1.246]") and "s2: +0.875" in v


def _with_ipp(folder: Path, n: int) -> Path:
    """Record in an eval run's results.json how many images per prompt it drew (as ``irisbench eval`` does)."""
    res = json.loads((folder / "results.json").read_text())
    (folder / "results.json").write_text(json.dumps({**res, "images_per_prompt": n}))
    return folder


def test_across_seed_interval_with_the_base_error_hand_computed(tmp_path: Path) -> None:
    """The base drew 8 images of each of 4 prompts, right on 4 of prompt 0's (per-prompt means 0.5, 0, 0, 0: score
    0.125), the three seeds 2 images each (deltas 0.375, 0.625, 0.875 as in ``_synthetic``). The base's se over
    prompts: sample variance of (0.5, 0, 0, 0) = 0.0625, over 4 prompts: se^2 = 0.015625, se = 0.125, df 3.
    With the seeds' v_s = 0.25^2 / 3 = 0.0208333: se = sqrt(0.0364583) = 0.190941, Welch-Satterthwaite
    df = 0.0364583^2 / (0.0208333^2 / 2 + 0.015625^2 / 3) = 4.454545, capped at n - 1 = 2: t(0.975, 2) = 4.302653,
    0.625 +- 0.821553 = [-0.196553, 1.446553] (includes 0); the Student-t interval (base exact) stays
    [0.004, 1.246] (above 0)."""
    tags = {p: "single_object" for p in range(4)}
    base = {"geneval/test": _with_ipp(make_run(tmp_path / "base", {(p, s): p == 0 and s < 4 for p in tags
                                                                    for s in range(8)}, tags), 8)}
    _, evals = _synthetic(tmp_path / "runs")
    for ev in evals:
        _with_ipp(Path(ev.folders["geneval/test"]), 2)
    (e,) = seed_deltas(base, evals, n_resamples=300)
    assert [s["delta"] for s in e["seeds"]] == pytest.approx([0.375, 0.625, 0.875])
    assert all(s["mode"] == "paired" for s in e["seeds"])  # 8 images against 2: still the same prompts
    assert (e["base_se"], e["base_se_df"]) == (pytest.approx(0.125), pytest.approx(3.0))
    m = e["mean"]
    assert (m["se_with_base"], m["df_with_base"]) == (pytest.approx(0.190941, abs=1e-6), 2.0)
    half = 4.302653 * 0.190941
    assert (m["ci_low_with_base"], m["ci_high_with_base"]) == pytest.approx((0.625 - half, 0.625 + half), abs=1e-5)
    t_half = 4.302653 * 0.25 / 3 ** 0.5
    assert (m["ci_low"], m["ci_high"]) == pytest.approx((0.625 - t_half, 0.625 + t_half), abs=1e-6)
    assert (e["images_per_prompt"], e["base_images_per_prompt"]) == (2, 8)
    assert e["class"] == "improves" and e["class_with_base"] == "no difference"

    # the CSV keeps the old columns and adds the new ones on the mean row; every row says both images per prompt
    df = pd.read_csv(write_seed_csv([e], tmp_path / "seed_deltas.csv"), dtype={"seed": str})
    assert list(df.columns) == list(SEED_COLUMNS)
    mean = df.set_index("seed").loc[MEAN]
    assert (mean["ci_low"], mean["ci_high"]) == pytest.approx((0.625 - t_half, 0.625 + t_half), abs=1e-6)
    assert (mean["ci_low_with_base"], mean["ci_high_with_base"], mean["base_se"]) == pytest.approx(
        (0.625 - half, 0.625 + half, 0.125), abs=1e-5)
    assert df["images_per_prompt"].tolist() == [2, 2, 2, 2] and df["base_images_per_prompt"].tolist() == [8] * 4
    assert df.loc[df.seed != MEAN, "base_se"].isna().all()

    # the summary's table gives both intervals, the arithmetic in one line, and the images per prompt of each
    md = seed_markdown([e])
    assert "*best val* checkpoints on test, 2 images per prompt, the base 8:" in md
    assert "| +0.625 [+0.004, +1.246] | +0.625 [-0.197, +1.447] |" in md
    assert "se = sqrt(s²/n + base_se²) with Welch–Satterthwaite df capped at n − 1" in md
    assert "base_se: geneval/test 0.1250." in md
    assert "over its prompts at 8 images per prompt" in md
    (v,) = seed_verdicts([e])
    assert "on geneval/test (2 images per prompt, the base 8) across 3 seeds" in v
    # the wider interval reaches 0: the sentence says so (the verdict's class stays the Student-t one)
    assert v.startswith("iris-nsc (best val) improves on the base")
    assert "with the base's own error (se 0.1250): +0.625 [-0.197, +1.447], includes 0" in v
    narrow = {**e, "class_with_base": "improves", "mean": {**m, "ci_low_with_base": 0.01}}
    assert "+0.625 [+0.010, +1.447], also above 0" in seed_verdicts([narrow])[0]


def test_one_seed_has_no_interval_across_seeds(tmp_path: Path) -> None:
    base, evals = _synthetic(tmp_path)
    (e,) = seed_deltas(base, evals[:1], n_resamples=200)
    assert e["mean"]["delta"] == pytest.approx(0.375) and e["mean"]["ci_low"] is None and e["class"] == "unknown"
    assert "+0.375 (n/a: one seed)" in seed_markdown([e])
    assert "no interval across seeds (n/a)" in seed_verdicts([e])[0]
    with pytest.raises(UsageError, match="twice"):
        seed_deltas(base, [evals[0], evals[0]], n_resamples=200)


def test_parse_seeds_good_and_bad() -> None:
    assert parse_seeds("0,1,2") == (0, 1, 2)
    assert parse_seeds(" 3, 1 ") == (3, 1)
    assert parse_seeds("7") == (7,)
    for bad, why in (("0,x", "'x' is not a non-negative integer"), ("", "empty item"), ("0,,1", "empty item"),
                     ("-1", "'-1' is not"), ("1,1", "duplicates"), ("1.5", "'1.5' is not")):
        with pytest.raises(UsageError, match=why) as info:
            parse_seeds(bad)
        assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="seeds"):
        ExperimentConfig(seeds=()).check()
    with pytest.raises(UsageError, match="'seed'"):
        ExperimentConfig(train_overrides={"seed": 3}).check()


def test_cli_passes_seeds_and_refuses_bad_ones(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import irisbench.experiment.run
    from irisbench.cli import app

    seen: list[ExperimentConfig] = []
    monkeypatch.setattr(irisbench.experiment.run, "run_experiment", lambda out, cfg, **kw: seen.append(cfg))
    runner = CliRunner()
    args = ["experiment", "--out", str(tmp_path / "exp"), "--no-publish-readme"]
    result = runner.invoke(app, [*args, "--seeds", "4,2", "--seed", "9"])
    assert result.exit_code == 0, result.output
    assert seen[-1].seeds == (4, 2) and seen[-1].seed == 9
    assert runner.invoke(app, args).exit_code == 0 and seen[-1].seeds == (0, 1, 2)
    bad = runner.invoke(app, [*args, "--seeds", "0,x"])
    assert bad.exit_code == 2 and "--seeds '0,x'" in bad.output and len(seen) == 2
    assert "Traceback" not in bad.output


def test_cli_five_seeds_and_base_images(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``--seeds 0,1,2,3,4`` trains every default method five times; ``--base-images`` sets only the base's
    evaluations (the checkpoints' stay at 2); a non-positive count is one line."""
    from typer.testing import CliRunner

    import irisbench.experiment.run
    from irisbench.cli import app

    seen: list[ExperimentConfig] = []
    monkeypatch.setattr(irisbench.experiment.run, "run_experiment", lambda out, cfg, **kw: seen.append(cfg))
    runner = CliRunner()
    args = ["experiment", "--out", str(tmp_path / "exp"), "--no-publish-readme"]
    result = runner.invoke(app, [*args, "--seeds", "0,1,2,3,4"])
    assert result.exit_code == 0, result.output
    cfg = seen[-1]
    assert cfg.seeds == (0, 1, 2, 3, 4) and set(cfg.methods) == {"iris-nsc", "verifier", "null-random"}
    assert cfg.suites == ("geneval",)
    assert runner.invoke(app, [*args, "--extended"]).exit_code == 0
    assert list(seen[-1].methods) == ["iris-nsc", "iris-faithful", "verifier", "null-random"]
    assert seen[-1].suites == ("geneval", "compbench")
    for extra, line in ((["--publish"], "--publish-to results/experiment-extended"),
                        (["--world", "textures"], "leave --extended out")):
        refused = runner.invoke(app, ["experiment", "--out", str(tmp_path / "exp"), "--extended", *extra])
        assert refused.exit_code == 2 and line in refused.output and "Traceback" not in refused.output
    assert (cfg.base_images_per_prompt, cfg.eval_images_per_prompt) == (8, 2)
    assert runner.invoke(app, [*args, "--base-images", "16"]).exit_code == 0
    assert (seen[-1].base_images_per_prompt, seen[-1].eval_images_per_prompt) == (16, 2)
    bad = runner.invoke(app, [*args, "--base-images", "0"])
    assert bad.exit_code == 2 and "base_images_per_prompt (--base-images) must be a positive integer" in bad.output
    assert "Traceback" not in bad.output and len(seen) == 3


@pytest.mark.slow
def test_worker_processes_give_the_serial_numbers(tiny_base: Path, tmp_path: Path) -> None:
    """jobs=2 (training and evaluations in two spawned processes) writes the same per-image records, training
    metrics and seed deltas as jobs=1 at the same thread count; a failing unit stops the run in one line."""
    def cfg(jobs: int, **kw: Any) -> ExperimentConfig:
        overrides = {"prompts_per_step": 2, "num_generations": 2, "eval_prompts": 4, **kw}
        return ExperimentConfig(methods={"null-random": "null-shapes"}, steps=2, checkpoint_every=1,
                                suites=("geneval",), references=("random",), val_images_per_prompt=1,
                                base=str(tiny_base), eval_limit=4, eval_images_per_prompt=1, base_images_per_prompt=2,
                                seeds=(0, 1), jobs=jobs, threads=1, seen=False, train_overrides=overrides)

    serial, parallel = run_experiment(tmp_path / "serial", cfg(1)), run_experiment(tmp_path / "parallel", cfg(2))
    assert (tmp_path / "parallel" / "logs").is_dir() and not (tmp_path / "serial" / "logs").exists()
    assert parallel["seed_deltas"] == serial["seed_deltas"] and parallel["selection"] == serial["selection"]
    assert parallel["timing"]["jobs"] == 2 and serial["timing"]["jobs"] == 1
    for label, folders in serial["evals"].items():
        for key, folder in folders.items():
            mine = pd.read_parquet(Path(folder) / "records.parquet").drop(columns=["image"], errors="ignore")
            theirs = pd.read_parquet(Path(parallel["evals"][label][key]) / "records.parquet")
            pd.testing.assert_frame_equal(mine, theirs.drop(columns=["image"], errors="ignore"))
    for seed in (0, 1):
        rows = [[json.loads(line) for line in (tmp_path / run / "train" / "null-random" / f"seed-{seed}" / "train"
                                               / "metrics.jsonl").read_text().splitlines()] for run in ("serial",
                                                                                                       "parallel")]
        timings = ("t_", "s_per_step", "elapsed_s", "time")
        assert [{k: v for k, v in r.items() if not k.startswith(timings)} for r in rows[0]] == \
               [{k: v for k, v in r.items() if not k.startswith(timings)} for r in rows[1]]
    from irisbench.core.errors import IrisbenchError

    with pytest.raises(IrisbenchError, match="num_generations must be an integer >= 2"):  # raised in a worker
        run_experiment(tmp_path / "bad", cfg(2, num_generations=1))
    assert list((tmp_path / "bad" / "logs").glob("train_null-random_seed_*.log"))


def test_a_resumed_folder_with_another_base_evaluation_is_refused(tmp_path: Path) -> None:
    """An experiment folder whose base was evaluated at 2 images per prompt (the earlier default) is refused in
    one line before anything runs, naming both fixes; the same count resumes."""
    from irisbench.core.runs import RunDir
    from irisbench.experiment.run import check_base_resume

    out = tmp_path / "exp"
    folder = out / "eval" / "base" / "geneval-test"
    RunDir.create(folder, kind="eval", config={"command": "eval", "images_per_prompt": 2}, env={})
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    cfg = ExperimentConfig(methods={"null-random": "null-shapes"}, device="cpu")
    with pytest.raises(UsageError) as info:
        run_experiment(out, cfg)
    msg = str(info.value)
    assert "\n" not in msg and str(folder) in msg and "at 2 images per prompt, this experiment at 8" in msg
    assert "use a new --out, or --base-images 2 to resume this folder" in msg
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing written
    check_base_resume(out, ExperimentConfig(base_images_per_prompt=2))  # the same count resumes


def test_the_experiment_selects_the_best_val_step_as_the_analysis_does(tmp_path: Path) -> None:
    """The experiment's checkpoint choice is ``analysis.select_checkpoint`` on val alone: the highest val score
    (ties: the earliest step), and the last val step; a run without val evaluations is refused."""
    from analysis_synthetic import write_results

    from irisbench.analysis import select_checkpoint
    from irisbench.experiment.run import selected_steps

    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"irisbench_run": 1, "kind": "train", "created": "now"}))
    for step, score in {1: 0.40, 2: 0.72, 3: 0.31, 4: 0.72, 5: 0.55}.items():
        write_results(run / "eval" / "val" / f"step-{step}", score)
    assert selected_steps(run) == (2, 5)
    s = select_checkpoint(run, "best-val", test_split=None)
    assert s["step"] == 2 and s["val_score"] == 0.72 and s["test_score"] is None
    assert s["candidate_steps"] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="no val evaluation"):
        selected_steps(tmp_path / "empty")


def test_world_sets_the_base_methods_and_readme_block(tmp_path: Path) -> None:
    from irisbench.experiment.run import DEFAULT_METHODS
    from irisbench.experiment.summary import publish, published_folder, readme_markers

    shapes, textures = ExperimentConfig(), ExperimentConfig(world="textures")
    shapes.check()
    textures.check()
    assert (shapes.base, textures.base) == ("shapes-base", "textures-base")
    assert shapes.methods == DEFAULT_METHODS["shapes"]
    assert shapes.methods == {"iris-nsc": "iris-shapes", "verifier": "verifier-shapes", "null-random": "null-shapes"}
    assert shapes.suites == ("geneval",) and textures.suites == ("geneval", "compbench")
    extended = ExperimentConfig(extended=True)
    extended.check()
    assert extended.methods == {"iris-nsc": "iris-shapes", "iris-faithful": "iris-shapes-faithful",
                                "verifier": "verifier-shapes", "null-random": "null-shapes"}
    assert extended.suites == ("geneval", "compbench")
    assert set(textures.methods) == {"iris-nsc", "nsc-balanced", "iris-faithful", "verifier", "null-random"}
    assert textures.methods["null-random"] == "null-shapes"
    assert textures.methods["iris-faithful"] == "iris-shapes-faithful"
    kept = ExperimentConfig(world="textures", base="/some/folder", methods={"v": "verifier-shapes"})
    kept.check()
    assert kept.base == "/some/folder" and kept.methods == {"v": "verifier-shapes"}
    with pytest.raises(UsageError, match="--world must be one of shapes, textures"):
        ExperimentConfig(world="tiles").check()
    with pytest.raises(UsageError, match="at least one method"):
        ExperimentConfig(methods={}).check()
    with pytest.raises(UsageError, match="label 'null' reads as a missing value in the tidy tables"):
        ExperimentConfig(methods={"null": "null-shapes"}).check()
    # each world publishes into its own README block and folder, and leaves the other's alone
    assert readme_markers("shapes") == (README_BEGIN, README_END)
    begin, end = readme_markers("textures")
    assert published_folder("textures") == Path("results/experiment-textures")
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_BEGIN}\nshapes block\n{README_END}\n\n{begin}\nold\n{end}\n")
    publish(readme, "textures table\n", {}, {}, tmp_path / "exp", world="textures")
    text = readme.read_text()
    assert "shapes block" in text and "old" not in text and f"{begin}\ntextures table\n" in text
    assert (tmp_path / "results" / "experiment-textures").is_dir()
    assert not (tmp_path / "results" / "experiment").exists()


def test_cli_world_option(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import irisbench.experiment.run
    from irisbench.cli import app

    seen: list[tuple[Path, ExperimentConfig]] = []
    monkeypatch.setattr(irisbench.experiment.run, "run_experiment", lambda out, cfg, **kw: seen.append((out, cfg)))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["experiment", "--world", "textures", "--no-publish-readme"])
    assert result.exit_code == 0, result.output
    out, cfg = seen[-1]
    assert out == Path("results/runs/experiment-textures") and cfg.base == "textures-base"
    bad = runner.invoke(app, ["experiment", "--world", "tiles"])
    assert bad.exit_code == 2 and "--world must be one of shapes, textures" in bad.output and len(seen) == 1
    janus = runner.invoke(app, ["experiment", "--arch", "janus"])
    assert janus.exit_code == 0, janus.output
    out, cfg = seen[-1]
    assert out == Path("results/runs/experiment-janus") and cfg.base == "janus-shapes" and cfg.name == "janus"
    for flags, fix in ((["--world", "textures"], "--world textures"), (["--extended"], "--extended")):
        refused = runner.invoke(app, ["experiment", "--arch", "janus", *flags])
        assert refused.exit_code == 2 and f"through the Janus path: leave {fix} out" in refused.output
    unknown = runner.invoke(app, ["experiment", "--arch", "gpt"])
    assert unknown.exit_code == 2 and "--arch 'gpt': choose one of shapes-lm, janus" in unknown.output
    assert len(seen) == 2


def test_the_janus_path_trains_its_own_presets_from_the_shipped_janus() -> None:
    """--arch janus: the shipped tiny Janus as the base, and IRIS, the verifier and the null as the Janus-path
    presets, which differ from the shapes LM's only in the policy they train (and what it freezes)."""
    from irisbench.experiment.config import DEFAULT_METHODS, NULL_METHOD, null_methods
    from irisbench.train.config import load_preset

    cfg = ExperimentConfig(arch="janus")
    cfg.check()
    assert cfg.base == "janus-shapes" and cfg.suites == ("geneval",)
    assert list(cfg.methods) == list(DEFAULT_METHODS["shapes"])
    assert null_methods(cfg.methods) == [NULL_METHOD]
    for label, preset in cfg.methods.items():
        janus, lm = load_preset(preset), load_preset(DEFAULT_METHODS["shapes"][label])
        assert janus["policy"] == "janus-shapes" and janus["reward"] == lm["reward"]
        assert {k for k in janus.keys() | lm.keys() if janus.get(k) != lm.get(k)} <= {
            "policy", "cfg", "lr", "freeze", "description"}


def test_cli_publishes_only_when_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without --publish the experiment gets no README to rewrite; --publish passes ./README.md, and refuses in
    one line where ./README.md has no experiment block."""
    from typer.testing import CliRunner

    import irisbench.experiment.run
    from irisbench.cli import app

    seen: list[Path | None] = []
    monkeypatch.setattr(irisbench.experiment.run, "run_experiment",
                        lambda out, cfg, publish_readme=None, **kw: seen.append(publish_readme))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    Path("README.md").write_text(f"# x\n{README_BEGIN}\nold\n{README_END}\n")
    assert runner.invoke(app, ["experiment"]).exit_code == 0 and seen == [None]
    assert runner.invoke(app, ["experiment", "--publish"]).exit_code == 0 and seen[-1] == Path("README.md")
    assert runner.invoke(app, ["experiment", "--no-publish-readme"]).exit_code == 0 and seen[-1] is None
    Path("README.md").write_text("# no block\n")
    bad = runner.invoke(app, ["experiment", "--publish"])
    assert bad.exit_code == 2 and "--publish rewrites the <!-- experiment:begin --> block of ./README.md" in bad.output
    assert "Traceback" not in bad.output and len(seen) == 3
    Path("README.md").unlink()
    bad = runner.invoke(app, ["experiment", "--world", "textures", "--publish"])
    assert bad.exit_code == 2 and "experiment-textures:begin" in bad.output and "does not exist" in bad.output


@pytest.mark.slow
def test_a_users_run_leaves_the_clone_clean(tiny_base: Path, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    """`irisbench experiment` in a clone (the repository's .gitignore, a README with the block, tracked
    published tables) changes no tracked file and leaves nothing untracked; `--publish` rewrites the block and
    the published tables. The experiment is a tiny one (one null method, one seed) with the CLI's own folders
    and publish target."""
    import shutil
    import subprocess

    from typer.testing import CliRunner

    import irisbench.experiment.run
    from irisbench.cli import app

    real = irisbench.experiment.run.run_experiment

    def tiny(out: Path, cfg: ExperimentConfig, **kw: Any) -> dict[str, Any]:
        small = ExperimentConfig(methods={"null-random": "null-shapes"}, steps=1, checkpoint_every=1,
                                 suites=("geneval",), references=(), val_images_per_prompt=1, base=str(tiny_base),
                                 eval_limit=4, eval_images_per_prompt=1, base_images_per_prompt=1, seeds=(0,),
                                 threads=1,
                                 train_overrides={"prompts_per_step": 2, "num_generations": 2, "eval_prompts": 4})
        return real(out, small, **kw)

    monkeypatch.setattr(irisbench.experiment.run, "run_experiment", tiny)
    clone = tmp_path / "clone"
    (clone / "results" / "experiment").mkdir(parents=True)
    shutil.copyfile(Path(__file__).resolve().parents[1] / ".gitignore", clone / ".gitignore")
    (clone / "README.md").write_text(f"# x\n\n{README_BEGIN}\npublished block\n{README_END}\n")
    (clone / "results" / "experiment" / "seed_deltas.csv").write_text("published,table\n")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=clone, check=True,
                              capture_output=True, text=True).stdout

    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "published")
    monkeypatch.chdir(clone)
    runner = CliRunner()
    result = runner.invoke(app, ["experiment"])
    assert result.exit_code == 0, result.output
    assert (clone / "results" / "runs" / "experiment" / "summary.md").is_file()  # the outputs are there ...
    assert git("status", "--porcelain", "--untracked-files=all") == ""  # ... and the clone is clean
    result = runner.invoke(app, ["experiment", "--publish"])  # resumes, then publishes
    assert result.exit_code == 0, result.output
    changed = git("status", "--porcelain", "--untracked-files=all")
    assert " M README.md" in changed and " M results/experiment/seed_deltas.csv" in changed
    assert "published block" not in (clone / "README.md").read_text()
    assert "1 image per prompt in every evaluation" in (clone / "README.md").read_text()
    assert "results/runs" not in changed


def test_the_released_recipe_command_and_publish_to(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """docs/method.md's extended command reaches run_experiment as written: two methods, 3 seeds, 160 steps
    evaluated every 16, published into the folder given (the README left alone); a file there is refused."""
    from typer.testing import CliRunner

    import irisbench.experiment.run
    from irisbench.cli import app

    seen: list[tuple[Path, ExperimentConfig, dict]] = []
    monkeypatch.setattr(irisbench.experiment.run, "run_experiment", lambda out, cfg, **kw: seen.append((out, cfg, kw)))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    args = ["experiment", "--method", "iris-released=iris-shapes-released", "--method",
            "null-released=null-shapes-released", "--seeds", "0,1,2", "--steps", "160", "--checkpoint-every", "16",
            "--threads", "1", "--out", "results/runs/released-recipe", "--publish-to", "results/released-recipe"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out, cfg, kw = seen[-1]
    assert out == Path("results/runs/released-recipe") and kw["publish_readme"] is None
    assert kw["publish_folder"] == Path("results/released-recipe")
    assert cfg.methods == {"iris-released": "iris-shapes-released", "null-released": "null-shapes-released"}
    assert (cfg.seeds, cfg.steps, cfg.checkpoint_every, cfg.threads) == ((0, 1, 2), 160, 16, 1)
    assert irisbench.experiment.run.null_methods(cfg.methods) == ["null-released"]
    Path("taken").write_text("x")
    bad = runner.invoke(app, [*args[:-1], "taken"])
    assert bad.exit_code == 2 and "--publish-to taken: exists and is not a folder" in bad.output and len(seen) == 1


def test_publish_to_writes_the_tables_and_summary_into_the_folder(tmp_path: Path) -> None:
    from irisbench.experiment.summary import publish_to

    out = tmp_path / "exp"
    out.mkdir()
    (out / "curve.csv").write_text("method,seed,step\nbase,0,0\n")
    (out / "seed_deltas.csv").write_text("method\niris\n")
    folder = tmp_path / "results" / "released-recipe"
    paths = publish_to(folder, "SUMMARY-TEXT", {"plots": []}, {}, out)
    assert (folder / "curve.csv").read_text() == (out / "curve.csv").read_text()
    assert (folder / "seed_deltas.csv").read_text() == "method\niris\n" and not (folder / "vs_null.csv").exists()
    summary = (folder / "summary.md").read_text()
    assert summary.startswith("SUMMARY-TEXT\n") and "(./curve.csv)" in summary and "(./seed_deltas.csv)" in summary
    assert set(paths) == {"curve", "seed_deltas", "summary"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp", "results"]  # nothing else written (no README)


def test_code_changed_under_a_running_experiment_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    """The sources' fingerprint follows every file's bytes; an experiment whose sources change after its start
    stops at its next stage with one line (nothing run, nothing lost), and a worker given another start-time
    fingerprint refuses its unit before doing anything."""
    import irisbench.core.provenance
    import irisbench.experiment.run
    import irisbench.experiment.units
    from irisbench.core.provenance import code_fingerprint
    from irisbench.experiment.parallel import run_unit
    from irisbench.experiment.units import EvalTask

    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "sub" / "b.py").write_text("y = 2\n")
    before = code_fingerprint(package)
    assert code_fingerprint(package) == before
    (package / "sub" / "b.py").write_text("y = 3\n")
    assert code_fingerprint(package) != before
    (package / "sub" / "b.py").write_text("y = 2\n")
    assert code_fingerprint(package) == before

    # the experiment takes its start-time value from provenance; every later check sees the update
    monkeypatch.setattr(irisbench.core.provenance, "code_fingerprint", lambda: "at start")
    monkeypatch.setattr(irisbench.experiment.units, "code_fingerprint", lambda: "after an update")
    cfg = ExperimentConfig(methods={"null-random": "null-shapes"}, jobs=1, device="cpu")
    with pytest.raises(UsageError, match="source files changed while this experiment ran .* run the same command "
                                         "again to resume"):
        irisbench.experiment.run.run_experiment(tmp_path / "exp", cfg)
    assert not (tmp_path / "exp" / "eval").exists() and not (tmp_path / "exp" / "train").exists()
    task = EvalTask("base", "random", "geneval", "val", tmp_path / "w" / "eval", None)
    with pytest.raises(UsageError, match="source files changed while this experiment ran"):
        run_unit(task, tmp_path / "w", cfg, "at start")
    assert not (tmp_path / "w").exists()


def test_the_wall_time_line_says_the_seconds_summary_json_logs() -> None:
    """summary.md's wall time is the logged (0.1 s) seconds, so the two never round to different minutes: 44.96 s
    is logged as 45.0 s, 0.75 min, which the line gives as 0.8 (the unrounded 44.96 s would read 0.7)."""
    from irisbench.experiment.summary import _timing_line

    timing = {"seconds": 45.0, "total_seconds": 45.0, "invocations": 1, "cpu": "Some CPU", "capability": "AVX2",
              "isa_env": {}, "threads": 1, "jobs": 2}
    assert _timing_line(44.96, timing) == ("Wall time: 0.8 min on Some CPU, ATen capability AVX2, 1 torch thread in "
                                          "each of 2 processes.")
    assert _timing_line(44.96, None) == "Wall time: 0.7 min."
