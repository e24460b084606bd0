"""Training curves, checkpoint selection without test leakage, and analyze_runs end to end on synthetic runs."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from analysis_synthetic import synthetic_records, write_eval_run, write_results, write_train_run

from irisbench.analysis import (
    AnalysisError,
    analyze_runs,
    correlate,
    eval_curves,
    load_training_curves,
    select_checkpoint,
    selection_table,
    training_dynamics,
)

VAL = {2: 0.5, 4: 0.7, 6: 0.7}  # a tie between steps 4 and 6
TEST = {2: 0.8, 4: 0.6, 6: 0.65}


@pytest.fixture
def train_run(tmp_path):
    run = write_train_run(tmp_path / "train-a", VAL, TEST)
    write_results(run / "eval" / "val" / "step-8", 0.9)  # the best val score, but never evaluated on test
    return run


def test_selection_picks_the_val_best_step_and_reports_its_test_score(train_run):
    s = select_checkpoint(train_run, "best-val")
    assert s["step"] == 4  # 0.7 at steps 4 and 6: the earliest; step 8 has no test evaluation
    assert s["val_score"] == 0.7 and s["test_score"] == 0.6
    assert s["test_ci_low"] == pytest.approx(0.55) and s["test_ci_high"] == pytest.approx(0.65)
    assert s["candidate_steps"] == [2, 4, 6] and s["steps_without_test"] == [8]
    assert "validation" in s["rule_description"]
    assert select_checkpoint(train_run, "last")["step"] == 6
    assert select_checkpoint(train_run, "step:2")["test_score"] == 0.8
    leaky = select_checkpoint(train_run, "best-test")
    assert leaky["step"] == 2 and leaky["test_score"] == 0.8 and "LEAKY" in leaky["rule_description"]
    tag = select_checkpoint(train_run, "best-val", metric="counting")
    assert tag["step"] == 4 and tag["test_score"] == pytest.approx(0.3)
    with pytest.raises(AnalysisError, match="step 8"):
        select_checkpoint(train_run, "step:8")
    with pytest.raises(AnalysisError, match="unknown selection rule"):
        select_checkpoint(train_run, "best")
    with pytest.raises(AnalysisError, match="no 'color_attr' scores"):
        select_checkpoint(train_run, metric="color_attr")
    with pytest.raises(AnalysisError, match="leakage"):
        select_checkpoint(train_run, test_split="val")
    t = selection_table([train_run])
    assert list(t["rule"]) == ["best-val", "last", "best-test"] and list(t["step"]) == [4, 6, 2]


def test_training_and_eval_curves(train_run):
    path = train_run / "train" / "metrics.jsonl"
    path.write_text(path.read_text() + '{"step": 7, "reward_me')  # torn by kill -9
    curves = load_training_curves([train_run])
    assert list(curves["step"]) == [1, 2, 3, 4, 5, 6] and set(curves["run"]) == {"train-a"}
    assert curves["sc_image"].iloc[0] == pytest.approx(20.0)
    ev = eval_curves([train_run], "val")
    overall = ev[ev["tag"] == "overall"]
    assert list(overall["step"]) == [2, 4, 6, 8] and list(overall["score"]) == [0.5, 0.7, 0.7, 0.9]
    assert set(ev["tag"]) == {"overall", "counting", "position"}
    dyn = training_dynamics([train_run], "val")
    assert list(dyn["step"]) == [1, 2, 3, 4, 5, 6, 8]
    assert dyn.set_index("step").loc[4, "val_score"] == 0.7 and pd.isna(dyn.set_index("step").loc[3, "val_score"])
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(AnalysisError, match=r"metrics.jsonl, line 2"):
        load_training_curves([train_run])


def test_analyze_runs_end_to_end(tmp_path, train_run):
    df = synthetic_records(n_prompts=45, slope=-2.0)
    ev = write_eval_run(tmp_path / "runs" / "model" / "test", df)
    none = write_eval_run(tmp_path / "runs" / "oracle" / "test",
                          df.assign(**{c: None for c in ("sc_text", "sc_image", "sc_all", "entropy_text",
                                                          "entropy_image", "entropy_all")}))
    out = tmp_path / "analysis"
    s = analyze_runs([ev, none, train_run], out, x_cols=["sc_image", "sc_text"], n_resamples=200)
    assert set(s["runs"]) == {"model/test", "oracle/test", "train-a"}
    assert {"correlation", "within_prompt", "binned", "prompt_means", "bestofn", "diversity", "dynamics",
            "eval_curves", "selection"} <= set(s["tables"])
    for t in s["tables"].values():
        assert pd.read_csv(t["csv"]).shape[0] == t["rows"] == pd.read_parquet(t["parquet"]).shape[0]
    names = {p.split("/")[-1] for p in s["plots"]}
    assert names == {"binned_model_test.png", "prompt_scatter_model_test.png", "bestofn_model_test.png",
                     "dynamics_train-a.png"}
    for p in s["plots"]:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert any("oracle/test: no uncertainty values" in n for n in s["notes"])
    head = s["runs"]["model/test"]
    direct = correlate(df, "sc_image", "correct", n_resamples=200).iloc[0]
    assert head["x"] == "sc_image" and head["y"] == "correct"
    assert head["spearman"]["spearman"] == pytest.approx(direct["spearman"])
    assert head["spearman"]["ci_high"] == pytest.approx(direct["spearman_ci_high"])
    assert head["spearman"]["ci_high"] < 0
    assert head["best_of_n"]["lowest"]["gain"] > 0 > head["best_of_n"]["highest"]["gain"]
    assert s["runs"]["train-a"]["selection"]["best-val"] == {"step": 4, "val_score": 0.7, "test_score": 0.6,
                                                             "test_ci_low": pytest.approx(0.55),
                                                             "test_ci_high": pytest.approx(0.65)}
    corr = pd.read_parquet(out / "correlation.parquet")
    assert set(corr["run"]) == {"model/test"} and set(corr["group"]) == {"all", "single_object", "counting",
                                                                        "position"}
    saved = json.loads((out / "summary.json").read_text())["runs"]["oracle/test"]
    assert saved["overall"]["score"] == pytest.approx(df["correct"].mean())  # equal tags: mean of tag means
    with pytest.raises(AnalysisError, match="neither an eval run"):
        analyze_runs([tmp_path / "runs"], out)
