"""The evaluation run's owner (``irisbench.evaluation.eval_run.EvalRun``): the declared, versioned ``results.json``
schema, no run-folder file name spelled outside the owner, the scorer contract, the aggregation registry
(hand-computed), WISE through the same run folder and schema, and refusing options WISE does not read."""

from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from irisbench.cli import app
from irisbench.core.registry import SCORERS
from irisbench.evaluation import eval_run
from irisbench.evaluation.aggregation import AGGREGATIONS, aggregate
from irisbench.evaluation.eval_run import SCHEMA_VERSION, EvalRun, ResultsSchemaError, validate_results
from irisbench.evaluation.wise_eval import STUB_JUDGE, WISE_METRIC_LIST, WiseOptions, evaluate_wise
from irisbench.scorers.contract import Scorer
from irisbench.scorers.wise_judge import WiseJudgeScorer
from irisbench.suites import AGGREGATIONS as SUITE_AGGREGATIONS
from irisbench.suites import MetricSpec, load_suite, suite_names

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def minimal_results() -> dict:
    return {"suite": "geneval", "protocol": "geneval", "world": "shapes", "split": "test", "seed": 0,
            "images_per_prompt": 2, "policy": {"name": "oracle"}, "prompts": {"n_prompts": 1},
            "counts": {"expected": 2, "actual": 2, "complete": True},
            "scores": {"overall": {"score": 0.5, "ci_low": 0.0, "ci_high": 1.0, "n_images": 2},
                       "tags": {"single_object": {"score": 0.5, "ci_low": None, "ci_high": None}}}}


# ------------------------------------------------------------------------------------------------ schema


def test_results_round_trip_through_the_owner(tmp_path: Path) -> None:
    run = EvalRun(tmp_path)
    written = run.write_results(minimal_results())
    assert written["schema_version"] == SCHEMA_VERSION
    back = run.read_results()
    assert back == {"schema_version": SCHEMA_VERSION, **minimal_results()}
    assert json.loads(run.results_path.read_text()) == back


@pytest.mark.parametrize("edit, field, what", [
    (lambda d: d.pop("suite"), "suite", "missing"),
    (lambda d: d["counts"].pop("complete"), "counts.complete", "missing"),
    (lambda d: d["scores"].pop("tags"), "scores.tags", "missing"),
    (lambda d: d["counts"].update(expected="2"), "counts.expected", "must be integer"),
    (lambda d: d["counts"].update(complete=1), "counts.complete", "must be bool"),
    (lambda d: d.update(seed=True), "seed", "must be integer"),
    (lambda d: d["scores"]["tags"]["single_object"].update(score="high"), "scores.tags.single_object.score",
     "must be number or null"),
    (lambda d: d.update(policy="oracle"), "policy", "must be object"),
])
def test_a_bad_results_file_is_one_line_naming_the_file_and_field(tmp_path: Path, edit, field, what) -> None:
    doc = minimal_results()
    edit(doc)
    (tmp_path / eval_run.RESULTS).write_text(json.dumps(doc))
    with pytest.raises(ResultsSchemaError) as info:
        EvalRun(tmp_path).read_results()
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(tmp_path / eval_run.RESULTS))
    assert (f"missing field {field!r}" if what == "missing" else f"field {field!r} {what}") in message


def test_a_future_schema_version_is_refused_and_an_unversioned_file_reads_as_version_1(tmp_path: Path) -> None:
    with pytest.raises(ResultsSchemaError, match=rf"schema_version {SCHEMA_VERSION + 1} was written by a newer "
                                                 rf"irisbench \(this one reads up to {SCHEMA_VERSION}\)"):
        validate_results({"schema_version": SCHEMA_VERSION + 1, **minimal_results()}, "x/results.json")
    validate_results(minimal_results(), "old/results.json")  # written before the version existed
    with pytest.raises(ResultsSchemaError, match="'schema_version' must be a positive integer"):
        validate_results({"schema_version": "1", **minimal_results()}, "x")


def test_the_writer_refuses_a_document_outside_the_schema(tmp_path: Path) -> None:
    doc = minimal_results()
    doc["counts"]["actual"] = 2.5
    with pytest.raises(ResultsSchemaError, match="field 'counts.actual' must be integer"):
        EvalRun(tmp_path).write_results(doc)
    assert not (tmp_path / eval_run.RESULTS).exists()


def test_readers_give_their_own_error_class_for_a_schema_error(tmp_path: Path) -> None:
    from irisbench.report.loading import ReportError, read_results

    doc = minimal_results()
    doc["counts"].pop("expected")
    (tmp_path / eval_run.RESULTS).write_text(json.dumps(doc))
    with pytest.raises(ReportError, match="missing field 'counts.expected'"):
        read_results(tmp_path)


# ------------------------------------------------------------------------ one owner of the file names

OWNERS = {"irisbench/evaluation/eval_run.py", "irisbench/core/runs.py"}
FILE_NAMES = re.compile(r"results\.jsonl?|records\.jsonl|records\.parquet|records\.rank-|run\.json|config\.yaml")


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def run_folder_names_spelled(path: Path) -> list[str]:
    """The string literals of ``path`` (docstrings left out) that spell a run-folder file name, or an f-string
    that starts with the images folder (``f"images/..."``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            if FILE_NAMES.search(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
        if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            if str(node.values[0].value).startswith(f"{eval_run.IMAGES}/"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: f{node.values[0].value!r}...")
    return found


def test_no_run_folder_file_name_is_spelled_outside_the_owner() -> None:
    spelled = [hit for p in sorted((ROOT / "irisbench").rglob("*.py")) if str(p.relative_to(ROOT)) not in OWNERS
               for hit in run_folder_names_spelled(p)]
    assert spelled == []


def test_the_scan_finds_a_spelled_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    mod = tmp_path / "m.py"
    mod.write_text('"""Reads results.json (a docstring: allowed)."""\n'
                   'A = "records.jsonl"\n'
                   'def f(i):\n    """config.yaml too."""\n    return f"images/{i}.png", "the results.json file"\n')
    assert [h.split(": ", 1)[0] for h in run_folder_names_spelled(mod)] == ["m.py:2", "m.py:5", "m.py:5"]


# ------------------------------------------------------------------------------------ scorer contract


def _scorer_classes() -> list[type]:
    return [SCORERS.get(name).load() for name in SCORERS.names() if SCORERS.get(name).available] + [WiseJudgeScorer]


def test_every_scorer_implements_the_contract() -> None:
    contract = inspect.signature(Scorer.score)
    for cls in _scorer_classes():
        assert callable(getattr(cls, "describe", None)), cls
        sig = inspect.signature(cls.score)
        assert list(sig.parameters) == list(contract.parameters) == ["self", "images", "items"], cls
    judge = WiseJudgeScorer(lambda png, prompt: "Score: 1", "verified", 1, description={"kind": "t"})
    assert isinstance(judge, Scorer) and judge.describe() == {"kind": "t"}


def test_the_wise_judge_scores_arrays_and_files_alike(tmp_path: Path) -> None:
    from irisbench.evaluation.wise_eval import StubJudge

    red = np.zeros((4, 4, 3), dtype=np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(tmp_path / "7.png")
    items = [{"Prompt": f"p{i}", "Explanation": "e", "Category": "c", "Subcategory": "s", "prompt_id": i}
             for i in (7, 8)]
    scorer = WiseJudgeScorer(StubJudge("legacy"), "legacy", 1)
    a, b = scorer.score([tmp_path / "7.png", red], items)
    # stub: consistency round(2 R/255) = 2, realism = aesthetic = 0 -> WiScore (0.7*2 + 0) / 2 = 0.7
    assert a["prompt_id"] == 7 and b["prompt_id"] == 8
    assert a["score"] == b["score"] == pytest.approx(0.7) and a["wiscore"] == a["score"]


# --------------------------------------------------------------------------------- aggregation registry


def test_mean_of_tag_means_and_mean_of_6_hand_computed() -> None:
    # two tags: a has prompts 0 (score 1.0) and 1 (scores 0.0, 0.5), b has prompt 2 (score 0.25)
    recs = [{"prompt_index": 0, "sample_index": 0, "tag": "a", "prompt": "p0", "score": 1.0},
            {"prompt_index": 1, "sample_index": 0, "tag": "a", "prompt": "p1", "score": 0.0},
            {"prompt_index": 1, "sample_index": 1, "tag": "a", "prompt": "p1", "score": 0.5},
            {"prompt_index": 2, "sample_index": 0, "tag": "b", "prompt": "p2", "score": 0.25}]
    out = aggregate((MetricSpec("score"), MetricSpec("score", "compbench_mean_of_6")), recs, n_resamples=0, seed=0)
    assert out["tags"]["a"]["score"] == pytest.approx(0.5)  # (1.0 + 0.0 + 0.5) / 3 images
    assert out["tags"]["b"]["score"] == pytest.approx(0.25)
    assert out["overall"]["score"] == pytest.approx(0.375)  # unweighted mean of the two tags
    assert out["mean_of_6_missing"] == ["color", "shape", "texture", "spatial", "non_spatial", "complex"]
    six = [{"prompt_index": k, "sample_index": 0, "tag": tag, "prompt": f"q{k}", "score": k / 10}
           for k, tag in enumerate(["color", "shape", "texture", "spatial", "non_spatial", "complex", "numeracy"])]
    out = aggregate((MetricSpec("score"), MetricSpec("score", "compbench_mean_of_6")), six, n_resamples=0, seed=0)
    from irisbench.protocols.compbench import MEAN_OF_6_LABEL

    assert out[MEAN_OF_6_LABEL] == pytest.approx((0 + 0.1 + 0.2 + 0.3 + 0.4 + 0.5) / 6)  # numeracy left out
    assert out["overall"]["score"] == pytest.approx(2.1 / 7)
    assert out["metric_list"] == [{"metric": "score", "aggregation": "mean_of_tag_means", "higher_is_better": True},
                                  {"metric": "score", "aggregation": "compbench_mean_of_6", "higher_is_better": True}]


def test_a_second_mean_of_tag_means_goes_beside_the_headline() -> None:
    recs = [{"prompt_index": i, "sample_index": 0, "tag": "t", "prompt": f"p{i}", "correct": i == 0,
             "score": 0.5 * i} for i in range(2)]
    out = aggregate((MetricSpec("correct"), MetricSpec("score")), recs, n_resamples=0, seed=0)
    assert out["overall"]["score"] == pytest.approx(0.5) and out["extra"]["score"]["overall"]["score"] == 0.25


def test_wiscore_weighting_hand_computed() -> None:
    # every one of the 1000 ids scored: culture all criteria 1 (WiScore (0.7 + 0.2 + 0.1) / 2 = 0.5), time all
    # criteria 2 (1.0), the rest 0
    def criteria(i: int) -> int:
        return 1 if i <= 400 else 2 if i <= 567 else 0

    recs = [{"prompt_index": i, "sample_index": 0, "prompt_id": i, "Subcategory": "s", "ok": True,
             "consistency": criteria(i), "realism": criteria(i), "aesthetic_quality": criteria(i),
             "wiscore": criteria(i) / 2} for i in range(1, 1001)]
    out = aggregate(WISE_METRIC_LIST["legacy"], recs, n_resamples=0, seed=0)
    assert out["tags"]["culture"]["score"] == pytest.approx(0.5) and out["tags"]["time"]["score"] == pytest.approx(1.0)
    assert out["overall"]["score"] == pytest.approx(0.4 * 0.5 + 0.167 * 1.0)
    assert out["metric_list"] == [{"metric": "wiscore", "aggregation": "wiscore_weighted", "higher_is_better": True}]
    recs[0].update(ok=False, wiscore=None, consistency=None, realism=None, aesthetic_quality=None)  # failed: no
    # overall, never a 0
    assert aggregate(WISE_METRIC_LIST["legacy"], recs, n_resamples=0, seed=0)["overall"]["score"] is None


def test_every_declared_aggregation_is_registered_and_is_what_results_hold() -> None:
    assert set(SUITE_AGGREGATIONS) <= set(AGGREGATIONS)
    for specs in WISE_METRIC_LIST.values():
        assert AGGREGATIONS[specs[0].aggregation].headline
    recs = [{"prompt_index": k, "sample_index": 0, "tag": "color", "prompt": "p", "correct": True, "score": 1.0}
            for k in range(2)]
    for name in suite_names():
        suite = load_suite(name)
        out = aggregate(suite.metric_list, recs, n_resamples=0, seed=0)
        assert out["metric_list"] == [dict(vars(m)) for m in suite.metric_list]
    with pytest.raises(ValueError, match="cannot be a headline"):
        aggregate((MetricSpec("score", "compbench_mean_of_6"),), recs, n_resamples=0, seed=0)


# --------------------------------------------------------------------------- WISE through the owner


def _wise_prompts(tmp_path: Path, ids) -> Path:
    file = tmp_path / "wise.json"
    file.write_text(json.dumps([{"Prompt": "a photo of a red circle", "Explanation": "e", "Category": "c",
                                 "Subcategory": "s", "prompt_id": i} for i in ids]))
    return file


def test_wise_writes_and_resumes_through_the_owner(tmp_path: Path) -> None:
    file = _wise_prompts(tmp_path, (1, 402, 950))
    folder = tmp_path / "images"
    folder.mkdir()
    for pid, rgb in ((1, (255, 0, 0)), (402, (0, 255, 0)), (950, (0, 0, 255))):
        Image.fromarray(np.full((2, 2, 3), rgb, dtype=np.uint8)).save(folder / f"{pid}.png")
    opts = WiseOptions(prompts=str(file), judge=STUB_JUDGE, images=str(folder), n_resamples=0)
    res = evaluate_wise(opts, tmp_path / "run")
    run = EvalRun(tmp_path / "run")
    saved = run.read_results()  # the same schema as every other suite
    assert saved == res and saved["schema_version"] == SCHEMA_VERSION
    assert saved["scores"]["metric_list"] == [dict(vars(m)) for m in WISE_METRIC_LIST["legacy"]]
    records = run.read_records(sort=True)
    assert [(r["prompt_index"], r["sample_index"]) for r in records] == [(1, 0), (402, 0), (950, 0)]
    # stub: red -> C 2 -> WiScore 0.7; green -> R 2 -> 0.2; blue -> A 2 -> 0.1
    assert [r["score"] for r in records] == pytest.approx([0.7, 0.2, 0.1])
    assert saved["scores"]["tags"]["culture"]["score"] == pytest.approx(0.7)
    assert run.parquet_path.is_file()
    again = evaluate_wise(opts, tmp_path / "run")
    assert again["counts"]["judged_now"] == 0 and again["scores"] == saved["scores"]


def test_wise_moves_its_generating_policy_to_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import irisbench.policies as policies

    seen: list = []
    real = policies.load_policy

    def load_policy(name, model=None, device="cpu", **kw):
        seen.append(device)
        return real(name, model, device="cpu", **kw)

    monkeypatch.setattr(policies, "load_policy", load_policy)
    file = _wise_prompts(tmp_path, (1,))
    evaluate_wise(WiseOptions(prompts=str(file), judge=STUB_JUDGE, policy="oracle", device="cpu", n_resamples=0),
                  tmp_path / "run")
    assert seen == ["cpu"]
    assert json.loads((tmp_path / "run" / "env.json").read_text())["device"] == "cpu"


# ---------------------------------------------------------------------- options that do not apply


def test_eval_wise_refuses_metric_option_on_the_command_line(tmp_path: Path) -> None:
    file = _wise_prompts(tmp_path, (1,))
    out = tmp_path / "run"
    result = runner.invoke(app, ["eval", "--suite", "wise", "--policy", "oracle", "--prompts", str(file), "--judge",
                                 STUB_JUDGE, "--metric-option", "pickscore_model=x", "--out", str(out)])
    assert result.exit_code == 2
    assert "--metric-option does not apply to --suite wise" in " ".join(result.output.split()) and not out.exists()


def test_a_partial_read_needs_only_the_overall_score_but_still_checks_types(tmp_path: Path) -> None:
    doc = {"scores": {"overall": {"score": 0.5}}}
    assert validate_results(doc, "r.json", partial=True) == doc
    with pytest.raises(ResultsSchemaError, match="missing field 'counts'"):  # required keys in sorted order
        validate_results(doc, "r.json")
    with pytest.raises(ResultsSchemaError, match="r.json: missing field 'scores.overall'"):
        validate_results({"scores": {}}, "r.json", partial=True)
    with pytest.raises(ResultsSchemaError, match="field 'images_per_prompt' must be integer or null"):
        validate_results({**doc, "images_per_prompt": "2"}, "r.json", partial=True)
