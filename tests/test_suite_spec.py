"""A suite's metric_list is what the summary computes; nothing in a suite file is parsed and ignored."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from irisbench.evaluation.evaluate import summarize
from irisbench.suites import MetricSpec, SuiteError, load_suite


def _suite_file(tmp_path: Path, base: str, **changes: object) -> Path:
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "suites" / f"{base}.yaml").read_text())
    raw.update(changes)
    path = tmp_path / f"{base}-custom.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


RECORDS = [  # two tags; `correct` and `score` disagree so that the summary shows which one it read
    {"tag": "a", "prompt_index": 0, "sample_index": 0, "correct": True, "score": 0.2},
    {"tag": "a", "prompt_index": 0, "sample_index": 1, "correct": False, "score": 0.4},
    {"tag": "a", "prompt_index": 1, "sample_index": 0, "correct": True, "score": 0.6},
    {"tag": "b", "prompt_index": 2, "sample_index": 0, "correct": False, "score": 1.0},
]


def test_shipped_suites_declare_their_aggregation() -> None:
    assert load_suite("geneval").metric_list == (MetricSpec("correct", "mean_of_tag_means", True),)
    assert [m.aggregation for m in load_suite("compbench").metric_list] == ["mean_of_tag_means",
                                                                            "compbench_mean_of_6"]


def test_summarize_reads_the_declared_metric(tmp_path: Path) -> None:
    geneval = load_suite("geneval")
    out = summarize(geneval, RECORDS, n_resamples=0, seed=0)
    # correct: a = 2/3, b = 0 -> overall (2/3 + 0) / 2
    assert out["tags"]["a"]["score"] == pytest.approx(2 / 3) and out["overall"]["score"] == pytest.approx(1 / 3)
    assert out["metric_list"] == [{"metric": "correct", "aggregation": "mean_of_tag_means", "higher_is_better": True}]
    on_score = load_suite(_suite_file(tmp_path, "geneval", metric_list=[{"metric": "score"}]))
    out = summarize(on_score, RECORDS, n_resamples=0, seed=0)
    # score: a = (0.2 + 0.4 + 0.6) / 3 = 0.4, b = 1.0 -> overall 0.7
    assert out["tags"]["a"]["score"] == pytest.approx(0.4) and out["overall"]["score"] == pytest.approx(0.7)


def test_compbench_mean_of_6_only_when_declared(tmp_path: Path) -> None:
    from irisbench.protocols.compbench import MEAN_OF_6, MEAN_OF_6_LABEL

    records = [{"tag": c, "prompt_index": i, "sample_index": 0, "score": 0.1 * (i + 1)}
               for i, c in enumerate(MEAN_OF_6)]
    out = summarize(load_suite("compbench"), records, n_resamples=0, seed=0)
    assert out[MEAN_OF_6_LABEL] == pytest.approx(sum(0.1 * (i + 1) for i in range(6)) / 6)
    assert out["mean_of_6_missing"] == []
    plain = load_suite(_suite_file(tmp_path, "compbench", metric_list=[{"metric": "score"}]))
    assert MEAN_OF_6_LABEL not in summarize(plain, records, n_resamples=0, seed=0)


@pytest.mark.parametrize(("metric_list", "needle"), [
    ([{"metric": "corect"}], "unknown per-image metric 'corect'"),
    ([{"metric": "correct", "aggregation": "mean_of_tag_mean"}], "Did you mean 'mean_of_tag_means'"),
    ([{"metric": "correct", "higher_is_better": "yes"}], "true or false"),
    ([{"metric": "correct", "aggregation": "compbench_mean_of_6"}], "compbench protocol only"),
    ([], "non-empty list"),
    ([{"metric": "correct", "weight": 2}], "keys among"),
])
def test_bad_metric_lists_are_refused_naming_the_entry(tmp_path: Path, metric_list: list, needle: str) -> None:
    with pytest.raises(SuiteError, match=needle) as e:
        load_suite(_suite_file(tmp_path, "geneval", metric_list=metric_list))
    assert "geneval-custom.yaml" in str(e.value)


def test_the_old_ignored_metrics_block_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="replaced by 'metric_list'"):
        load_suite(_suite_file(tmp_path, "geneval", metrics=[{"name": "overall"}]))
