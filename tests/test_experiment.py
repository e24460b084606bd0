"""The one-command experiment, end to end at toy scale (a tiny random policy, a few steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from irisbench.experiment import README_BEGIN, README_END, ExperimentConfig, run_experiment


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from irisbench.policies.shapes_lm import ShapesLMPolicy
    from irisbench.world.tokenizer import fit_patch_tokenizer

    pol = ShapesLMPolicy.create(fit_patch_tokenizer(n_scenes=1500, seed=0), hidden_size=32, num_layers=1,
                                num_heads=2, intermediate_size=64, seed=0)
    path = tmp_path_factory.mktemp("base") / "policy"
    pol.save(path)
    return path


@pytest.mark.slow
def test_experiment_runs_resumes_and_publishes(tiny_base: Path, tmp_path: Path) -> None:
    cfg = ExperimentConfig(methods={"iris-nsc": "iris-shapes", "verifier": "verifier-shapes"}, steps=2,
                           checkpoint_every=1, suites=("geneval", "compbench"), val_images_per_prompt=1,
                           base=str(tiny_base), eval_limit=6, eval_images_per_prompt=2,
                           train_overrides={"prompts_per_step": 2, "num_generations": 2})
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{README_BEGIN}\nold\n{README_END}\n\ntail\n")
    out = tmp_path / "exp"
    summary = run_experiment(out, cfg, publish_readme=readme)
    assert set(summary["selection"]) == {"iris-nsc", "verifier"}
    for label in ("base", "oracle", "random", "iris-nsc (last)", "verifier (best val)"):
        assert label in summary["evals"], summary["evals"].keys()
    assert (out / "report" / "report.html").is_file() and (out / "analysis" / "summary.json").is_file()
    text = readme.read_text()
    assert "old" not in text and "tail" in text and "best val" in text and "results/experiment/" in text
    assert (tmp_path / "results" / "experiment" / "training_dynamics.png").is_file()
    assert (tmp_path / "results" / "experiment" / "scores.parquet").is_file()
    # the table in summary.md is the numbers of the eval runs
    res = json.loads((Path(summary["evals"]["oracle"]["geneval/test"]) / "results.json").read_text())
    assert f"{res['scores']['overall']['score']:.3f}" in (out / "summary.md").read_text()
    # re-running resumes: nothing is trained or generated again
    again = run_experiment(out, cfg)
    assert again["selection"] == summary["selection"]
    for folders in again["evals"].values():
        for folder in folders.values():
            assert json.loads((Path(folder) / "results.json").read_text())["counts"]["generated_now"] == 0


def test_the_experiment_selects_the_best_val_step_as_the_analysis_does(tmp_path: Path) -> None:
    """The experiment's checkpoint choice is ``analysis.select_checkpoint`` on val alone: the highest val score
    (ties: the earliest step), and the last val step; a run without val evaluations is refused."""
    from analysis_synthetic import write_results

    from irisbench.analysis import select_checkpoint
    from irisbench.experiment import selected_steps

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
