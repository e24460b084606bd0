"""Report tables: numbers equal results.json, paired/unpaired delta CIs (by hand and by a slow loop),
verdict wording, Markdown/CSV/LaTeX/rich renderings, plots, and clear errors on bad input."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fixtures import make_run

from irisbench.report import (
    ReportError,
    RunRef,
    comparison_table,
    render_csv,
    render_latex,
    render_markdown,
    render_rich,
    verdict,
    verdicts,
    wide_table,
)
from irisbench.report.deltas import delta_cis
from irisbench.report.loading import load_run
from irisbench.report.tables import fmt_ci, fmt_delta

TAGS3 = {p: ["single_object", "counting", "color_attr"][p % 3] for p in range(12)}


def _two_tag_runs(tmp_path: Path) -> list[RunRef]:
    rng = np.random.default_rng(3)
    refs = []
    for name, prob in (("base", 0.5), ("iris_nsc", 0.7), ("random", 0.1)):
        correct = {(p, s): bool(rng.random() < prob) for p in range(12) for s in range(2)}
        refs.append(RunRef(name, make_run(tmp_path / name, correct, TAGS3, policy=name)))
    return refs


# --------------------------------------------------------------------------------------------------
# numbers
# --------------------------------------------------------------------------------------------------

def test_table_numbers_equal_results_json(tmp_path: Path) -> None:
    refs = _two_tag_runs(tmp_path)
    df = comparison_table(refs, base="base", n_resamples=300)
    assert list(dict.fromkeys(df["label"])) == ["base", "iris_nsc", "random"]
    assert list(dict.fromkeys(df["metric"])) == ["overall", "single_object", "counting", "color_attr"]
    for ref in refs:
        res = json.loads((Path(ref.path) / "results.json").read_text())
        for metric in ("overall", "single_object", "counting", "color_attr"):
            entry = res["scores"]["overall"] if metric == "overall" else res["scores"]["tags"][metric]
            row = df[(df["label"] == ref.label) & (df["metric"] == metric)].iloc[0]
            assert row["score"] == entry["score"] and row["ci_low"] == entry["ci_low"]
            assert row["ci_high"] == entry["ci_high"] and row["n_images"] == entry["n_images"]
            assert row["cell"] == f"{entry['score']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"
            assert row["expected"] == row["actual"] == 24 and row["complete"]
            if ref.label != "base":
                base = json.loads((tmp_path / "base" / "results.json").read_text())
                b = base["scores"]["overall"] if metric == "overall" else base["scores"]["tags"][metric]
                assert row["delta"] == pytest.approx(entry["score"] - b["score"], abs=1e-15)
                assert row["delta_ci_low"] <= row["delta_ci_high"] and row["delta_mode"] == "paired"
    base_rows = df[df["label"] == "base"]
    assert base_rows["delta"].isna().all() and base_rows["is_base"].all()
    wide = wide_table(df)
    assert list(wide.index) == ["base", "iris_nsc", "random"]
    assert wide.loc["random", ("geneval/test", "counting")] == df[(df["label"] == "random") & (
        df["metric"] == "counting")]["cell"].iloc[0]
    assert wide_table(df, "delta").loc["base"].isna().all()


def test_self_comparison_is_exactly_zero(tmp_path: Path) -> None:
    path = make_run(tmp_path / "a", {(p, 0): p % 2 == 0 for p in range(12)}, TAGS3)
    df = comparison_table([RunRef("a", path), RunRef("a again", path)], base="a", n_resamples=200)
    row = df[(df["label"] == "a again") & (df["metric"] == "overall")].iloc[0]
    assert (row["delta"], row["delta_ci_low"], row["delta_ci_high"]) == (0.0, 0.0, 0.0)
    assert row["delta_cell"] == "+0.000 [+0.000, +0.000]"


# --------------------------------------------------------------------------------------------------
# delta intervals by hand
# --------------------------------------------------------------------------------------------------

def _single_tag(tmp_path: Path, name: str, correct_prompts: set[int], sha: str) -> Path:
    return make_run(tmp_path / name, {(p, 0): p in correct_prompts for p in range(10)},
                    dict.fromkeys(range(10), "counting"), sha256=sha)


def test_complementary_runs_paired_and_unpaired_ci_by_hand(tmp_path: Path) -> None:
    """A is correct on prompts 0-4, B exactly on the others (10 prompts, one image each).

    Paired: a replicate draws 10 prompts; with X of them from B's half, delta = (2X - 10)/10, X ~ Bin(10, 1/2).
    P(X<=1) = 11/1024 < 2.5% < P(X<=2) = 56/1024, so the 2.5% quantile is X=2: CI = [-0.6, +0.6].
    Unpaired: delta = (Y_B - Y_A)/10 = (Bin(20, 1/2) - 10)/10; P(<=5) = 0.0207 < 2.5% < P(<=6) = 0.0577:
    CI = [-0.4, +0.4] (narrower: the two runs are perfectly anti-correlated over prompts).
    """
    a = _single_tag(tmp_path, "a", {0, 1, 2, 3, 4}, "s" * 64)
    b_same = _single_tag(tmp_path, "b", {5, 6, 7, 8, 9}, "s" * 64)
    b_other = _single_tag(tmp_path, "b_other_prompts", {5, 6, 7, 8, 9}, "t" * 64)
    paired = delta_cis(load_run(RunRef("A", a)), load_run(RunRef("B", b_same)), n_resamples=20000)
    assert paired["overall"].mode == "paired" and paired["overall"].delta == 0.0
    assert (paired["overall"].ci_low, paired["overall"].ci_high) == pytest.approx((-0.6, 0.6), abs=1e-12)
    assert (paired["counting"].ci_low, paired["counting"].ci_high) == pytest.approx((-0.6, 0.6), abs=1e-12)
    unpaired = delta_cis(load_run(RunRef("A", a)), load_run(RunRef("B", b_other)), n_resamples=20000)
    assert unpaired["overall"].mode == "unpaired" and "sha256" in unpaired["overall"].note
    assert (unpaired["overall"].ci_low, unpaired["overall"].ci_high) == pytest.approx((-0.4, 0.4), abs=1e-12)
    df = comparison_table([RunRef("A", a), RunRef("B", b_same)], base="A", n_resamples=20000)
    [v] = verdicts(df)
    assert v["class"] == "no difference"
    assert v["text"] == ("B does not improve on the base (A): delta +0.000 [-0.600, +0.600] "
                         "(95% CI includes 0, paired bootstrap)")


def test_one_extra_correct_prompt_paired_ci_by_hand(tmp_path: Path) -> None:
    """B = A plus prompt 3 correct. Paired delta = K/10 with K ~ Bin(10, 1/10) (draws of prompt 3):
    P(K=0) = 0.349 > 2.5% and P(K<=2) = 0.930 < 97.5% < P(K<=3) = 0.987, so CI = [0.0, +0.3]: never below 0,
    yet 0 is inside, so B "does not improve". Unpaired, the same runs give an interval well below 0."""
    a = _single_tag(tmp_path, "a", {0, 1, 2}, "s" * 64)
    b = _single_tag(tmp_path, "b", {0, 1, 2, 3}, "s" * 64)
    d = delta_cis(load_run(RunRef("A", a)), load_run(RunRef("B", b)), n_resamples=20000)["overall"]
    assert d.mode == "paired" and d.delta == pytest.approx(0.1)
    assert d.ci_low == 0.0 and d.ci_high == pytest.approx(0.3, abs=1e-12)
    b2 = _single_tag(tmp_path, "b2", {0, 1, 2, 3}, "u" * 64)
    d2 = delta_cis(load_run(RunRef("A", a)), load_run(RunRef("B", b2)), n_resamples=20000)["overall"]
    assert d2.mode == "unpaired" and d2.ci_low <= -0.2


def _reference_delta(base: list[dict], run: list[dict], tags: list[str], paired: bool, n: int, seed: int):
    """Slow loop over replicates and prompts; draws the indices in the same order as the module."""
    rng = np.random.default_rng(seed)

    def per_prompt(recs, tag):  # clusters are prompt texts (entries sharing a text are one cluster)
        out: dict[int | str, list[float]] = {}
        for r in recs:
            if r["tag"] == tag:
                key = " ".join(r["prompt"].lower().split()) if r.get("prompt") else r["prompt_index"]
                out.setdefault(key, []).append(float(r["correct"]))
        return out

    tag_reps = {}
    for t in tags:
        va, vb = per_prompt(base, t), per_prompt(run, t)
        pa, pb = sorted(va), sorted(vb)
        if paired:
            idx_a = idx_b = rng.integers(0, len(pa), size=(n, len(pa)))
        else:
            idx_a = rng.integers(0, len(pa), size=(n, len(pa)))
            idx_b = rng.integers(0, len(pb), size=(n, len(pb)))
        reps = []
        for k in range(n):
            sa = ca = sb = cb = 0.0
            for j in idx_a[k]:
                sa += sum(va[pa[j]])
                ca += len(va[pa[j]])
            for j in idx_b[k]:
                sb += sum(vb[pb[j]])
                cb += len(vb[pb[j]])
            reps.append(sb / cb - sa / ca)
        tag_reps[t] = reps
    overall = [sum(tag_reps[t][k] for t in tags) / len(tags) for k in range(n)]
    return tuple(np.percentile(overall, [2.5, 97.5])), {t: tuple(np.percentile(r, [2.5, 97.5]))
                                                        for t, r in tag_reps.items()}


@pytest.mark.parametrize("paired", [True, False])
def test_delta_ci_matches_slow_reference_loop(tmp_path: Path, paired: bool) -> None:
    rng = np.random.default_rng(11)
    samples = {p: 1 + p % 3 for p in range(12)}  # ragged: 1 to 3 images per prompt
    keys = [(p, s) for p in range(12) for s in range(samples[p])]
    a = make_run(tmp_path / "a", {k: bool(rng.random() < 0.4) for k in keys}, TAGS3, sha256="x" * 64)
    b_keys = keys if paired else [k for k in keys if k[0] != 5]  # unpaired: B lacks prompt 5
    b = make_run(tmp_path / "b", {k: bool(rng.random() < 0.6) for k in b_keys}, TAGS3, sha256="x" * 64)
    ra, rb = load_run(RunRef("A", a)), load_run(RunRef("B", b))
    got = delta_cis(ra, rb, n_resamples=400, seed=5)
    assert got["overall"].mode == ("paired" if paired else "unpaired")
    overall, per_tag = _reference_delta(ra.records, rb.records, list(TAGS3.values())[:3], paired, 400, 5)
    assert (got["overall"].ci_low, got["overall"].ci_high) == pytest.approx(overall, abs=1e-12)
    for t, ci in per_tag.items():
        assert (got[t].ci_low, got[t].ci_high) == pytest.approx(ci, abs=1e-12)


# --------------------------------------------------------------------------------------------------
# words
# --------------------------------------------------------------------------------------------------

def test_verdict_wording() -> None:
    assert verdict("IRIS (nsc)", -0.012, -0.035, 0.011) == (
        "IRIS (nsc) does not improve on the base: delta -0.012 [-0.035, +0.011] (95% CI includes 0)")
    assert verdict("IRIS (nsc)", 0.031, 0.008, 0.054, mode="paired") == (
        "IRIS (nsc) improves on the base: delta +0.031 [+0.008, +0.054] (95% CI above 0, paired bootstrap)")
    assert verdict("sc", -0.05, -0.08, -0.02, base="Janus-Pro-1B", scope="geneval/test") == (
        "sc is worse than the base (Janus-Pro-1B) on geneval/test: delta -0.050 [-0.080, -0.020] (95% CI below 0)")
    # a positive estimate whose interval touches 0 is NOT an improvement
    assert verdict("entropy", 0.02, 0.0, 0.04).startswith("entropy does not improve on the base: delta +0.020")
    assert "cannot say whether it improves" in verdict("x", 0.02, None, None)
    assert verdict("x", -0.01, -0.02, 0.0, incomplete=True).endswith(
        "[INCOMPLETE run: its scores cover only the images present]")
    assert fmt_ci(0.6124, 0.59, 0.6339) == "0.612 [0.590, 0.634]"
    assert fmt_delta(0.031, 0.008, 0.054) == "+0.031 [+0.008, +0.054]"


def test_verdicts_improve_no_difference_worse(tmp_path: Path) -> None:
    tags = {p: ["single_object", "counting"][p % 2] for p in range(30)}
    base = make_run(tmp_path / "base", {(p, 0): p % 2 == 0 for p in range(30)}, tags)
    better = make_run(tmp_path / "better", {(p, 0): True for p in range(30)}, tags)
    # loses prompt 0, gains prompts 3 and 9: delta = (-1/15 + 2/15) / 2 = +0.033, an interval around 0
    same = make_run(tmp_path / "same", {(p, 0): (p % 2 == 0 and p != 0) or p in (3, 9) for p in range(30)}, tags)
    worse = make_run(tmp_path / "worse", {(p, 0): False for p in range(30)}, tags)
    df = comparison_table([RunRef("base", base), RunRef("oracle", better), RunRef("IRIS (nsc)", same),
                           RunRef("random", worse)], base="base", n_resamples=500)
    by = {v["label"]: v for v in verdicts(df)}
    assert by["oracle"]["class"] == "improves" and by["oracle"]["text"].startswith("oracle improves on the base:")
    assert by["IRIS (nsc)"]["class"] == "no difference"
    assert by["IRIS (nsc)"]["text"].startswith("IRIS (nsc) does not improve on the base: delta +0.033 [")
    assert by["random"]["class"] == "worse" and by["random"]["text"].startswith("random is worse than the base:")


# --------------------------------------------------------------------------------------------------
# renderers
# --------------------------------------------------------------------------------------------------

def test_markdown_csv_latex_rich(tmp_path: Path) -> None:
    refs = _two_tag_runs(tmp_path)
    part = make_run(tmp_path / "part", {(p, 0): True for p in range(9)}, TAGS3, expected=24, policy="partial")
    refs.append(RunRef("half_done", part))
    df = comparison_table(refs, base="base", n_resamples=300)
    iris = df[(df["label"] == "iris_nsc") & (df["metric"] == "overall")].iloc[0]

    md = render_markdown(df, title="My report")
    assert md.startswith("# My report\n")
    assert f"| iris_nsc | 24/24 | {iris['cell']} |" in md
    assert fmt_delta(iris["delta"], iris["delta_ci_low"], iris["delta_ci_high"]) in md
    assert "| half_done (INCOMPLETE) | 9/24 INCOMPLETE |" in md
    assert "**WARNING — INCOMPLETE: half_done on geneval/test has 9 of 24 expected images" in md
    assert "half_done" in md and "unpaired" in md  # different prompt set -> unpaired, and it says so

    back = pd.read_csv(io.StringIO(render_csv(df)))
    assert len(back) == len(df)
    row = back[(back["label"] == "iris_nsc") & (back["metric"] == "counting")].iloc[0]
    ref = df[(df["label"] == "iris_nsc") & (df["metric"] == "counting")].iloc[0]
    for col in ("score", "ci_low", "ci_high", "delta", "delta_ci_low", "delta_ci_high"):
        assert row[col] == pytest.approx(ref[col], abs=1e-6)
    assert row["delta_cell"] == ref["delta_cell"]

    tex = render_latex(df, caption="Shapes GenEval")
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "single\\_object" in tex and "iris\\_nsc" in tex and "half\\_done$^\\dagger$" in tex
    assert not re.search(r"(?<!\\)_", tex), "every underscore must be escaped"
    assert f"iris\\_nsc & 24/24 & {iris['cell']}" in tex
    assert "9/24 \\textbf{INCOMPLETE}" in tex
    assert "run & images & overall & single\\_object & counting & color\\_attr \\\\\n" in tex

    from rich.console import Console

    console = Console(width=400, record=True)
    console.print(render_rich(df))
    text = console.export_text()
    assert iris["cell"] in text and "9/24 INCOMPLETE" in text
    lines = text.splitlines()
    assert all(v["text"] in lines for v in verdicts(df))  # one verdict per line


# --------------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------------

def test_plots(tmp_path: Path) -> None:
    from irisbench.report.plots import delta_forest, figure_png, score_bars, training_curves

    df = comparison_table(_two_tag_runs(tmp_path), base="base", n_resamples=200)
    fig = score_bars(df)
    heights = [p.get_height() for c in fig.axes[0].containers if hasattr(c, "patches") for p in c.patches]
    expected = [df[(df["label"] == lab) & (df["metric"] == m)]["score"].iloc[0]
                for lab in ("base", "iris_nsc", "random") for m in ("overall", "single_object", "counting",
                                                                   "color_attr")]
    assert sorted(heights) == pytest.approx(sorted(expected))
    assert figure_png(fig).startswith(b"\x89PNG")
    forest = delta_forest(df)
    assert len(forest.axes[0].get_yticklabels()) == 8  # 2 runs x (overall + 3 tags)
    with pytest.raises(ValueError, match="no deltas"):
        delta_forest(comparison_table([RunRef("base", tmp_path / "base")], n_resamples=50))
    curves = pd.DataFrame({"run": ["a"] * 3 + ["b"] * 3, "step": [0, 1, 2] * 2,
                           "reward_mean": [0.1, 0.2, 0.3, 0.0, 0.1, None], "kl": [0, 1, 2, 0, 2, 4]})
    fig = training_curves(curves, ["reward_mean", "kl"])
    assert len(fig.axes) == 2 and [len(ax.lines) for ax in fig.axes] == [2, 2]
    assert list(fig.axes[0].lines[1].get_ydata()) == [0.0, 0.1]  # the missing value is skipped
    with pytest.raises(ValueError, match="'loss'"):
        training_curves(curves, "loss")


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------

def test_bad_input_errors(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="results.json is missing"):
        comparison_table([RunRef("x", tmp_path / "nowhere")])
    good = make_run(tmp_path / "good", {(p, 0): p < 4 for p in range(12)}, TAGS3)
    with pytest.raises(ReportError, match="base 'nope' is not one of the run labels"):
        comparison_table([RunRef("good", good)], base="nope")
    with pytest.raises(ReportError, match="given twice"):
        comparison_table([RunRef("good", good), RunRef("good", good)])
    with pytest.raises(ReportError, match="non-empty"):
        RunRef("", good)

    bad = make_run(tmp_path / "bad", {(p, 0): True for p in range(12)}, TAGS3)
    res = json.loads((bad / "results.json").read_text())
    del res["scores"]["tags"]["counting"]["score"]
    (bad / "results.json").write_text(json.dumps(res))
    with pytest.raises(ReportError, match=r"results.json: scores.tags.counting: missing field 'score'"):
        comparison_table([RunRef("bad", bad)])

    stale = make_run(tmp_path / "stale", {(p, 0): True for p in range(12)}, TAGS3)
    lines = (stale / "records.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    rec["correct"] = False
    (stale / "records.jsonl").write_text("\n".join([json.dumps(rec), *lines[1:]]) + "\n")
    with pytest.raises(ReportError, match="results.json is stale"):
        comparison_table([RunRef("stale", stale)])

    broken = make_run(tmp_path / "broken", {(p, 0): True for p in range(12)}, TAGS3)
    lines = (broken / "records.jsonl").read_text().splitlines()
    rec = json.loads(lines[2])
    rec["correct"] = "yes"
    (broken / "records.jsonl").write_text("\n".join([*lines[:2], json.dumps(rec), *lines[3:]]) + "\n")
    with pytest.raises(ReportError, match=r"records.jsonl: line 3 .*'correct' must be a bool"):
        comparison_table([RunRef("broken", broken)])


def test_missing_records_gives_delta_without_interval(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", {(p, 0): p < 6 for p in range(12)}, TAGS3)
    b = make_run(tmp_path / "b", {(p, 0): p < 9 for p in range(12)}, TAGS3)
    (b / "records.jsonl").unlink()
    df = comparison_table([RunRef("a", a), RunRef("b", b)], base="a", n_resamples=100)
    row = df[(df["label"] == "b") & (df["metric"] == "overall")].iloc[0]
    assert row["delta"] == pytest.approx(0.25) and pd.isna(row["delta_ci_low"]) and row["delta_mode"] == "no interval"
    assert row["delta_cell"] == "+0.250 (no CI)"
    assert "cannot say whether it improves" in verdicts(df)[0]["text"]


def test_real_oracle_and_random_evals(tmp_path: Path) -> None:
    from irisbench.evaluation.evaluate import EvalOptions, evaluate

    for name in ("oracle", "random"):
        evaluate(EvalOptions(policy=name, limit=6, images_per_prompt=2, save_images=False, n_resamples=200),
                 tmp_path / name, progress=False)
    df = comparison_table([RunRef("oracle", tmp_path / "oracle"), RunRef("random", tmp_path / "random")],
                          base="oracle", n_resamples=300)
    res = json.loads((tmp_path / "random" / "results.json").read_text())
    row = df[(df["label"] == "random") & (df["metric"] == "overall")].iloc[0]
    assert row["score"] == res["scores"]["overall"]["score"] and row["delta_mode"] == "paired"
    assert row["delta"] == pytest.approx(res["scores"]["overall"]["score"] - 1.0)
    [v] = verdicts(df)
    assert v["text"].startswith("random ") and v["class"] in ("worse", "no difference")


def test_several_suites_and_splits_per_label(tmp_path: Path) -> None:
    refs = []
    for split, shift in (("val", 0), ("test", 3)):
        for name, n_ok in (("base", 4), ("iris", 8)):
            path = make_run(tmp_path / f"{name}-{split}", {(p, 0): p < n_ok + shift for p in range(12)}, TAGS3,
                            split=split, sha256=split[0] * 64)
            refs.append(RunRef(name, path))
    df = comparison_table(refs, base="base", n_resamples=200)
    assert list(dict.fromkeys(df["group"])) == ["geneval/val", "geneval/test"]
    wide = wide_table(df, "score")
    assert wide.shape == (2, 8) and wide.loc["iris", ("geneval/val", "overall")] == pytest.approx(8 / 12)
    texts = [v["text"] for v in verdicts(df)]
    assert len(texts) == 2 and texts[0].startswith("iris ") and " on geneval/val: delta +0.333 [" in texts[0]
    assert " on geneval/test: delta +0.333 [" in texts[1]
    md = render_markdown(df)
    assert md.index("## geneval/val") < md.index("## geneval/test")


def test_continuous_score_runs_use_the_score_field(tmp_path: Path) -> None:
    tags = {p: ["color", "spatial"][p % 2] for p in range(10)}
    keys = [(p, s) for p in range(10) for s in range(2)]
    a = make_run(tmp_path / "a", dict.fromkeys(keys, False), tags, suite="compbench",
                 scores={k: 0.1 * (k[0] % 5) for k in keys})
    b = make_run(tmp_path / "b", dict.fromkeys(keys, False), tags, suite="compbench",
                 scores={k: 0.1 * (k[0] % 5) + 0.05 for k in keys})
    df = comparison_table([RunRef("a", a), RunRef("b", b)], base="a", n_resamples=300)
    row = df[(df["label"] == "b") & (df["metric"] == "overall")].iloc[0]
    assert row["group"] == "compbench/test" and row["delta"] == pytest.approx(0.05)
    # every prompt gains exactly 0.05: the paired interval has no width
    assert (row["delta_ci_low"], row["delta_ci_high"]) == pytest.approx((0.05, 0.05), abs=1e-12)
    assert verdicts(df)[0]["class"] == "improves"
