"""One evaluation loop for every suite: WISE draws, saves and judges its images through
``evaluate.produce_and_score`` as GenEval and T2I-CompBench do, with the images and records of the loop it had
before (checked against that loop, written out here as the reference); the results' keys come from one declared
place (``eval_run.Results``), an image source declares its own config and count fields, and an evaluation looks
its scorer up once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import irisbench.evaluation.eval_plan as eval_plan
import irisbench.evaluation.wise_eval as wise_eval
from irisbench.evaluation.eval_run import Counts, EvalRun, Results, ResultsSchemaError, wise_image_relpath
from irisbench.evaluation.evaluate import EvalOptions, evaluate
from irisbench.evaluation.wise_eval import STUB_JUDGE, StubJudge, WiseOptions, evaluate_wise
from irisbench.policies import load_policy
from irisbench.policies.base import derive_seed
from irisbench.protocols.wise import category_of
from irisbench.scorers.wise_judge import WiseJudgeScorer

PROMPTS = {1: "a photo of a red circle", 402: "a photo of two triangles", 950: "a photo of a white square"}
SEED = 7


def wise_file(tmp_path: Path) -> Path:
    file = tmp_path / "wise.json"
    file.write_text(json.dumps([{"Prompt": text, "Explanation": "", "Category": "c", "Subcategory": "s",
                                 "prompt_id": pid} for pid, text in PROMPTS.items()]))
    return file


@pytest.fixture(scope="module")
def policy():
    return load_policy("shapes-base", device="cpu")


class Counting:
    """A policy that counts the images it is asked to draw."""

    def __init__(self, policy) -> None:
        self.policy, self.drawn = policy, 0

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def sample(self, prompts, **kwargs):
        self.drawn += len(prompts)
        return self.policy.sample(prompts, **kwargs)


def reference_images(policy, batch_size: int) -> dict[int, np.ndarray]:
    """The WISE generation loop as it was before it went through ``produce_and_score``: the prompts in id order,
    ``batch_size`` at a time, one ``policy.sample`` per batch with the seeds ``derive_seed(seed, "wise", id, 0)``."""
    ids = sorted(PROMPTS)
    out: dict[int, np.ndarray] = {}
    for start in range(0, len(ids), batch_size):
        batch = ids[start:start + batch_size]
        rollout = policy.sample([PROMPTS[pid] for pid in batch], n=1, seed=[derive_seed(SEED, "wise", pid, 0)
                                                                            for pid in batch],
                                cfg=None, temperature=None, top_k=None)
        out.update(zip(batch, rollout.images, strict=True))
    return out


def test_wise_draws_and_judges_through_the_shared_loop_with_the_images_and_records_of_before(tmp_path: Path, policy,
                                                                                          monkeypatch):
    loops: list[str] = []
    real = wise_eval.produce_and_score

    def shared_loop(source, *args, **kwargs):
        loops.append(type(source).__name__)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(wise_eval, "produce_and_score", shared_loop)
    file = wise_file(tmp_path)
    expected_images = reference_images(policy, batch_size=2)
    for batch_size in (2, 1):  # the images do not depend on the batch
        run = tmp_path / f"run-{batch_size}"
        evaluate_wise(WiseOptions(prompts=str(file), judge=STUB_JUDGE, seed=SEED, batch_size=batch_size,
                                  n_resamples=0), run, policy=policy, progress=False)
        for pid, image in expected_images.items():
            assert np.array_equal(np.asarray(Image.open(run / wise_image_relpath(pid)).convert("RGB")), image), pid
        items = [{"Prompt": PROMPTS[pid], "Explanation": "", "Category": "c", "Subcategory": "s", "prompt_id": pid}
                 for pid in sorted(PROMPTS)]
        judged = WiseJudgeScorer(StubJudge("legacy"), "legacy", 3).score([expected_images[it["prompt_id"]]
                                                                          for it in items], items)
        expected = [{"prompt_index": it["prompt_id"], "sample_index": 0, "tag": category_of(it["prompt_id"], "legacy"),
                     "prompt": it["Prompt"], "Category": "c", "seed": derive_seed(SEED, "wise", it["prompt_id"], 0),
                     "image": wise_image_relpath(it["prompt_id"]), **j, "judge_model": STUB_JUDGE, "judge_url": None}
                    for it, j in zip(items, judged, strict=True)]
        records = EvalRun(run).read_records(sort=True)
        assert records == expected and [list(r) for r in records] == [list(r) for r in expected]
    assert loops == ["WisePolicySource", "WisePolicySource"]


def test_wise_judges_a_failed_image_again_without_drawing_it_again(tmp_path: Path, policy, monkeypatch):
    file = wise_file(tmp_path)
    counting = Counting(policy)
    opts = WiseOptions(prompts=str(file), judge=STUB_JUDGE, seed=SEED, retries=1, n_resamples=0)
    real_call = StubJudge.__call__

    def down(self, png, prompt):
        raise ConnectionError("judge down")

    monkeypatch.setattr(StubJudge, "__call__", down)
    first = evaluate_wise(opts, tmp_path / "run", policy=counting, progress=False)
    assert first["failures"]["n"] == 3 and counting.drawn == 3
    saved = {pid: (tmp_path / "run" / wise_image_relpath(pid)).read_bytes() for pid in PROMPTS}
    monkeypatch.setattr(StubJudge, "__call__", real_call)
    again = evaluate_wise(opts, tmp_path / "run", policy=counting, progress=False)
    assert counting.drawn == 3  # the saved images are judged, not drawn again
    assert again["counts"]["rejudged"] == 3 and again["counts"]["judged"] == 3 and "failures" not in again
    assert {pid: (tmp_path / "run" / wise_image_relpath(pid)).read_bytes() for pid in PROMPTS} == saved
    assert [r["seed"] for r in EvalRun(tmp_path / "run").read_records(sort=True)] == [
        derive_seed(SEED, "wise", pid, 0) for pid in sorted(PROMPTS)]


def test_an_evaluation_looks_its_scorer_up_once(tmp_path: Path, monkeypatch):
    looked_up: list[str] = []
    real = eval_plan.scorer_entry

    def counting(suite, world):
        looked_up.append(world)
        return real(suite, world)

    monkeypatch.setattr(eval_plan, "scorer_entry", counting)
    evaluate(EvalOptions(policy="oracle", limit=1, images_per_prompt=1, n_resamples=0), tmp_path / "run",
             progress=False)
    assert looked_up == ["shapes"]
    evaluate(EvalOptions(images=str(tmp_path / "run"), n_resamples=0), tmp_path / "scored", progress=False)
    assert looked_up == ["shapes", "shapes"]


def declared(schema: type) -> set[str]:
    import typing

    return set(typing.get_type_hints(schema))


def test_results_keys_come_from_the_one_declaration(tmp_path: Path):
    drawn = evaluate(EvalOptions(policy="oracle", limit=1, images_per_prompt=1, n_resamples=0), tmp_path / "run",
                     progress=False)
    scored = evaluate(EvalOptions(images=str(tmp_path / "run"), n_resamples=0), tmp_path / "scored", progress=False)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.full((2, 2, 3), 255, dtype=np.uint8)).save(folder / "1.png")
    wise = evaluate_wise(WiseOptions(prompts=str(wise_file(tmp_path)), judge=STUB_JUDGE, images=str(folder),
                                     allow_missing=True, n_resamples=0), tmp_path / "wise", progress=False)
    for res in (drawn, scored, wise):
        assert set(res) <= declared(Results) and set(res["counts"]) <= declared(Counts)
    # a folder source declares its coverage check once: the same block in the config and the counts
    config = EvalRun.open(tmp_path / "scored").config
    check = scored["counts"]["image_check"]
    assert check == config["image_check"] and check["missing"] == 0 and check["allow_missing"] is False
    assert "sampling" in EvalRun.open(tmp_path / "run").config and "image_check" not in drawn["counts"]
    run = EvalRun(tmp_path / "run")
    with pytest.raises(ResultsSchemaError, match=r"field 'device' is not declared .*eval_run\.Results: add it there"):
        run.write_results({**drawn, "device": "cpu"})
    with pytest.raises(ResultsSchemaError, match=r"field 'counts\.retried' is not declared .*eval_run\.Counts"):
        run.write_results({**drawn, "counts": {**drawn["counts"], "retried": 1}})
    assert run.read_results() == drawn  # the refused writes left the file alone
