"""Scoring images made elsewhere (``eval --images``), the official layouts every run writes, GenEval's
results.jsonl read by a re-implementation of ``summary_scores.py``, and the stratified ``--limit``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from irisbench.cli import app
from irisbench.evaluation.evaluate import EvalOptions, evaluate

runner = CliRunner()
SCORED = ("prompt_index", "sample_index", "tag", "prompt", "metadata", "correct", "score", "reason", "detections")


def _records(run: Path) -> list[dict]:
    lines = (run / "records.jsonl").read_text(encoding="utf-8").splitlines()
    return sorted((json.loads(x) for x in lines if x.strip()), key=lambda r: (r["prompt_index"], r["sample_index"]))


def _scored(run: Path) -> list[dict]:
    return [{k: r[k] for k in SCORED} for r in _records(run)]


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def geneval_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-policy GenEval run (every tag, 2 prompts each, 2 images per prompt): right and wrong images."""
    run = tmp_path_factory.mktemp("geneval") / "run"
    evaluate(EvalOptions(policy="random", limit_per_tag=2, images_per_prompt=2), run, progress=False)
    return run


@pytest.fixture(scope="module")
def compbench_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("compbench") / "run"
    evaluate(EvalOptions(policy="random", suite="compbench", limit_per_tag=2, images_per_prompt=2), run,
             progress=False)
    return run


def _copy_geneval(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    return dest


# ------------------------------------------------------------------------------------------- round trips


def test_geneval_folder_round_trip_gives_the_records_and_scores_of_the_run(geneval_run: Path, tmp_path: Path) -> None:
    folder = geneval_run / "geneval"
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:05d}" for i in range(12)]
    assert sorted(p.name for p in (folder / "00003" / "samples").iterdir()) == ["00000.png", "00001.png"]
    assert os.path.samefile(folder / "00003" / "samples" / "00001.png", geneval_run / "images" / "00003" / "01.png")
    result = runner.invoke(app, ["eval", "--images", str(folder), "-n", "2", "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    again = tmp_path / "again"
    assert _scored(again) == _scored(geneval_run)
    a, b = _results(geneval_run), _results(again)
    assert b["scores"] == a["scores"]
    assert 0 < a["scores"]["overall"]["score"] < 1  # right and wrong images both present
    assert b["policy"]["name"] == "external" and b["policy"]["layout"] == "geneval"
    assert b["prompts"]["sha256"] == a["prompts"]["sha256"] and b["split"] == a["split"] == "test"
    assert b["prompts"]["name"] == "geneval shapes test, first 2 per tag"
    assert all(r["seed"] is None for r in _records(again))
    # the new run lays the images out again, and its results.jsonl equals the original's
    assert (again / "results.jsonl").read_text() == (geneval_run / "results.jsonl").read_text()


def test_compbench_folder_round_trip(compbench_run: Path, tmp_path: Path) -> None:
    folder = compbench_run / "compbench"
    assert sorted(p.name for p in folder.iterdir()) == ["color", "numeracy", "spatial"]
    items = [json.loads(r["metadata"]) for r in _records(compbench_run) if r["sample_index"] == 1]
    spatial = [it for it in items if it["tag"] == "spatial"]
    # prompt 1 of the category, sample 1, at 2 images per prompt: index 2*1 + 1
    assert (folder / "spatial" / "samples" / f"{spatial[1]['rule_prompt']}_000003.png").is_file()
    res = evaluate(EvalOptions(images=str(folder), limit_per_tag=2, images_per_prompt=2), tmp_path / "again",
                   progress=False)
    assert _scored(tmp_path / "again") == _scored(compbench_run)
    assert res["scores"] == _results(compbench_run)["scores"]
    assert res["prompts"]["categories"] == ["numeracy", "spatial", "color"]


def test_compbench_one_category_folder_by_name_by_prompts_and_given(compbench_run: Path, tmp_path: Path) -> None:
    by_name = evaluate(EvalOptions(images=str(compbench_run / "compbench" / "spatial"), limit_per_tag=2,
                                   images_per_prompt=2), tmp_path / "a", progress=False)
    assert list(by_name["scores"]["tags"]) == ["spatial"]
    assert by_name["scores"]["tags"]["spatial"] == _results(compbench_run)["scores"]["tags"]["spatial"]
    anon = tmp_path / "anon"
    shutil.copytree(compbench_run / "compbench" / "color", anon)
    by_prompts = evaluate(EvalOptions(images=str(anon), limit_per_tag=2, images_per_prompt=2), tmp_path / "b",
                          progress=False)
    assert list(by_prompts["scores"]["tags"]) == ["color"]
    wrong = runner.invoke(app, ["eval", "--images", str(anon), "--limit", "2", "-n", "2", "--category", "spatial",
                                "--out", str(tmp_path / "c")])
    assert wrong.exit_code != 0 and "is prompt 0, sample 0, but prompt 0 is" in wrong.output
    assert not (tmp_path / "c").exists()


def test_compbench_images_per_prompt_is_inferred_from_the_names(compbench_run: Path, tmp_path: Path) -> None:
    # names written at 2 images per prompt decode at 2 only: without -n that count is used; -n 4 is refused,
    # naming both counts
    res = evaluate(EvalOptions(images=str(compbench_run / "compbench"), limit_per_tag=2), tmp_path / "a",
                   progress=False)
    assert res["images_per_prompt"] == 2 and res["scores"] == _results(compbench_run)["scores"]
    result = runner.invoke(app, ["eval", "--images", str(compbench_run / "compbench"), "--limit", "2", "-n", "4",
                                 "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "numbered at 2 images per prompt" in " ".join(result.output.split())


def test_rescoring_a_run_folder_keeps_its_generation_fields(geneval_run: Path, tmp_path: Path) -> None:
    res = evaluate(EvalOptions(images=str(geneval_run), suite=None), tmp_path / "again", progress=False)
    assert _scored(tmp_path / "again") == _scored(geneval_run)
    assert res["scores"] == _results(geneval_run)["scores"]
    before, after = _records(geneval_run), _records(tmp_path / "again")
    assert [r["seed"] for r in after] == [r["seed"] for r in before]
    assert [r["plan"] for r in after] == [r["plan"] for r in before]
    assert res["policy"]["source_policy"]["name"] == "random" and res["policy"]["layout"] == "run"
    assert res["images_per_prompt"] == 2 and res["split"] == "test"


def test_folder_prompt_sets_are_named() -> None:
    from irisbench.evaluation.eval_plan import geneval_folder_prompts
    from irisbench.protocols.geneval_prompts import generate_official_metadata
    from irisbench.suites import load_suite
    from irisbench.world.prompts import build_splits

    suite = load_suite("geneval")
    opts = EvalOptions(images="x")
    official = geneval_folder_prompts(suite, "open", generate_official_metadata(seed=43), opts)
    assert official["name"] == "official" and official["official_format_sha256"] == suite.prompts["open"].sha256
    val = geneval_folder_prompts(suite, "shapes", build_splits(seed=0)["val"], opts)
    assert val["name"] == "geneval shapes val" and val["split"] == "val"
    first10 = geneval_folder_prompts(suite, "open", generate_official_metadata(seed=43)[:10],
                                     EvalOptions(images="x", allow_missing=True))
    assert first10["name"] == "10 of the 553 official prompts" and first10["n_prompts_missing"] == 543
    shuffled = build_splits(seed=0)["val"][::-1]
    assert geneval_folder_prompts(suite, "shapes", shuffled, opts)["name"] == "folder"


# -------------------------------------------------------------------------------------------- bad input


def _write_png(path: Path, size: int = 32) -> None:
    from PIL import Image

    Image.fromarray(np.full((size, size, 3), 128, dtype=np.uint8)).save(path)


def _fails(args: list[str], out: Path, *needles: str) -> str:
    result = runner.invoke(app, ["eval", *args, "--out", str(out)])
    assert result.exit_code != 0, result.output
    text = " ".join(result.output.split())
    assert text.startswith("error:") and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in text, text
    assert not (out / "results.json").exists()
    return text


def test_folder_in_no_known_layout_names_the_path_and_the_layouts(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "cat.png").write_bytes(b"x")
    _fails(["--images", str(folder)], tmp_path / "out", "cat.png: not part of a known image layout",
           "<00000>/metadata.jsonl", "samples/{prompt}_{NNNNNN}.png")
    stray = _copy_geneval(_geneval_dir(tmp_path), tmp_path / "g")
    (stray / "notes").mkdir()
    _fails(["--images", str(stray), "-n", "2"], tmp_path / "out2", "notes: not a prompt folder")


def _geneval_dir(tmp_path: Path) -> Path:
    """A small GenEval folder (oracle, 1 prompt per tag, 2 images each)."""
    run = tmp_path / "src"
    if not run.exists():
        evaluate(EvalOptions(policy="oracle", limit_per_tag=1, images_per_prompt=2), run, progress=False)
    return run / "geneval"


def test_metadata_disagreeing_with_the_suite_is_refused(tmp_path: Path) -> None:
    folder = _copy_geneval(_geneval_dir(tmp_path), tmp_path / "g")
    _fails(["--images", str(folder), "-n", "2", "--split", "val"], tmp_path / "o1", "differs from the suite's prompt 0")
    meta = folder / "00002" / "metadata.jsonl"
    obj = json.loads(meta.read_text())
    obj["include"][0]["class"] = "hexagon"
    meta.write_text(json.dumps(obj))
    _fails(["--images", str(folder), "-n", "2"], tmp_path / "o2", "00002/metadata.jsonl", "'hexagon'",
           "not a known class")
    meta.write_text(json.dumps(obj) + "\n" + json.dumps(obj))
    _fails(["--images", str(folder), "-n", "2"], tmp_path / "o3", "00002/metadata.jsonl: not one JSON object")


def test_bad_pngs_duplicates_empty_prompts_and_gaps_are_refused(tmp_path: Path) -> None:
    src = _geneval_dir(tmp_path)
    f = _copy_geneval(src, tmp_path / "size")
    _write_png(f / "00001" / "samples" / "00000.png", size=64)
    _fails(["--images", str(f), "-n", "2"], tmp_path / "o1", "00001/samples/00000.png: image is 64x64",
           "draws 32x32")
    f = _copy_geneval(src, tmp_path / "dup")
    shutil.copy(f / "00001" / "samples" / "00000.png", f / "00001" / "samples" / "0.png")
    _fails(["--images", str(f), "-n", "2"], tmp_path / "o2", "duplicate sample index 0")
    f = _copy_geneval(src, tmp_path / "empty")
    for p in (f / "00004" / "samples").iterdir():
        p.unlink()
    _fails(["--images", str(f), "-n", "2"], tmp_path / "o3", "prompt 4", "has no image at all")
    f = _copy_geneval(src, tmp_path / "gap")
    shutil.rmtree(f / "00002")
    _fails(["--images", str(f), "-n", "2"], tmp_path / "o4", "no prompt folder 00002")


def test_missing_extra_misnamed_and_unreadable_images_are_counted_and_refused(tmp_path: Path) -> None:
    src = _geneval_dir(tmp_path)
    f = _copy_geneval(src, tmp_path / "g")
    (f / "00000" / "samples" / "00001.png").unlink()  # missing
    _write_png(f / "00002" / "samples" / "first.png")  # misnamed
    (f / "00003" / "samples" / "00001.png").write_bytes(b"not a png at all")  # unreadable
    _fails(["--images", str(f), "-n", "2"], tmp_path / "o1", "incomplete image folder", "2 missing",
           "first: prompt 0", "1 misnamed", "first.png", "1 unreadable",
           "00003/samples/00001.png", "--allow-missing")
    result = runner.invoke(app, ["eval", "--images", str(f), "-n", "2", "--allow-missing", "--out",
                                 str(tmp_path / "o2")])
    assert result.exit_code == 0, result.output
    res = _results(tmp_path / "o2")
    check = res["counts"]["image_check"]
    assert check["missing"] == 2 and check["extra"] == 0 and check["misnamed"] == 1 and check["unreadable"] == 1
    assert res["counts"]["expected"] == 12 and res["counts"]["actual"] == 10 and not res["counts"]["complete"]
    assert "2 image(s) missing" in " ".join(result.output.split())
    scored = {(r["prompt_index"], r["sample_index"]) for r in _records(tmp_path / "o2")}
    assert (0, 1) not in scored and (3, 1) not in scored and len(scored) == 10


def test_compbench_duplicate_indices_and_unknown_category_folders_are_refused(compbench_run: Path,
                                                                              tmp_path: Path) -> None:
    folder = tmp_path / "cb"
    shutil.copytree(compbench_run / "compbench", folder)
    first = sorted((folder / "color" / "samples").iterdir())[0]
    prompt, _, index = first.stem.rpartition("_")
    shutil.copy(first, first.with_name(f"{prompt}_0{index}.png"))  # the same index, 7 digits
    _fails(["--images", str(folder), "--limit", "2", "-n", "2"], tmp_path / "o1", "duplicate sample index",
           "prompt 0, sample 0")
    shutil.rmtree(folder)
    shutil.copytree(compbench_run / "compbench", folder)
    (folder / "texture" / "samples").mkdir(parents=True)
    _fails(["--images", str(folder), "--limit", "2", "-n", "2"], tmp_path / "o2",
           "'texture' is a T2I-CompBench category, not scored by this suite in the shapes world",
           "(its categories: numeracy, spatial, color)")


def test_wrong_protocol_for_the_layout_is_refused(compbench_run: Path, tmp_path: Path) -> None:
    _fails(["--images", str(compbench_run / "compbench"), "--suite", "geneval"], tmp_path / "o",
           "a compbench layout, but suite 'geneval'")


def test_images_and_policy_together_are_refused(geneval_run: Path, tmp_path: Path) -> None:
    _fails(["--images", str(geneval_run), "--policy", "oracle"], tmp_path / "o", "--policy do(es) not apply")
    _fails(["--images", str(geneval_run), "--cfg", "3", "--top-k", "5"], tmp_path / "o2",
           "--cfg, --top-k do(es) not apply")


# ------------------------------------------------------------------------ official results.jsonl arithmetic


def summary_scores(path: Path) -> dict:
    """GenEval's ``evaluation/summary_scores.py`` arithmetic, re-implemented: pandas reads the records-oriented
    JSON lines; a task's score is the mean of ``correct`` over its images (tags grouped in order of first
    appearance); overall is the unweighted mean of the task scores. Also its informational figures."""
    import pandas as pd

    df = pd.read_json(path, orient="records", lines=True)
    tasks = {tag: float(task_df["correct"].mean()) for tag, task_df in df.groupby("tag", sort=False)}
    return {"tasks": tasks, "overall": float(np.mean(list(tasks.values()))), "images": len(df),
            "prompts": len(df.groupby("metadata")), "correct_images": float(df["correct"].mean()),
            "correct_prompts": float(df.groupby("metadata")["correct"].any().mean())}


def test_official_results_jsonl_gives_the_numbers_of_results_json(geneval_run: Path) -> None:
    path = geneval_run / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(list(r) == ["filename", "tag", "prompt", "correct", "reason", "metadata", "details"] for r in rows)
    records = _records(geneval_run)
    assert len(rows) == len(records) == 24
    for row, rec in zip(rows, records, strict=True):
        assert (geneval_run / row["filename"]).is_file()
        assert os.path.samefile(geneval_run / row["filename"], geneval_run / rec["image"])
        assert row["correct"] is rec["correct"] and row["reason"] == rec["reason"]
        assert json.loads(row["metadata"]) == json.loads(rec["metadata"]) and row["metadata"] == rec["metadata"]
        details = json.loads(row["details"])
        cut = 0.9 if rec["tag"] == "counting" else 0.3
        kept = sorted(d["label"] for d in json.loads(rec["detections"]) if d["score"] > cut)
        assert sorted(label for label, boxes in details.items() for _ in boxes) == kept
        assert all(len(box) == 5 for boxes in details.values() for box in boxes)
    official = summary_scores(path)
    ours = _results(geneval_run)["scores"]
    assert list(official["tasks"]) == list(ours["tags"])
    for tag, score in official["tasks"].items():
        assert score == pytest.approx(ours["tags"][tag]["score"], abs=1e-12)
    assert official["overall"] == pytest.approx(ours["overall"]["score"], abs=1e-12)
    assert official["images"] == ours["n_images"]
    assert official["correct_images"] == pytest.approx(ours["correct_images_fraction"], abs=1e-12)
    # by hand, from the records: tag means, then their plain mean
    by_tag: dict[str, list[bool]] = {}
    for r in records:
        by_tag.setdefault(r["tag"], []).append(r["correct"])
    assert official["overall"] == pytest.approx(np.mean([np.mean(v) for v in by_tag.values()]), abs=1e-12)


def test_summary_scores_reimplementation_is_not_a_per_image_mean(tmp_path: Path) -> None:
    rows = [{"filename": f"{i}.png", "tag": tag, "prompt": "p", "correct": ok, "reason": "", "metadata": f"m{i}",
             "details": "{}"} for i, (tag, ok) in enumerate([("a", True), ("a", True), ("a", True), ("b", False)])]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = summary_scores(path)
    assert s["tasks"] == {"a": 1.0, "b": 0.0} and s["overall"] == 0.5 and s["correct_images"] == 0.75


# ------------------------------------------------------------------------------------- stratified --limit


def test_limit_keeps_the_first_n_prompts_of_every_tag_and_says_so(geneval_run: Path) -> None:
    from irisbench.policies.base import derive_seed
    from irisbench.suites import load_suite, resolve_prompts

    full, _ = resolve_prompts(load_suite("geneval"), "shapes", "test")
    res = _results(geneval_run)
    chosen = res["limit"]["source_indices"]
    expected = []
    for tag in dict.fromkeys(it["tag"] for it in full):
        expected += [k for k, it in enumerate(full) if it["tag"] == tag][:2]
    assert chosen == sorted(expected) and len(chosen) == 12
    assert res["limit"]["per_tag"] == 2 and "first N prompts of every tag" in res["limit"]["rule"]
    assert list(res["scores"]["tags"]) == ["single_object", "two_object", "counting", "colors", "position",
                                           "color_attr"]
    assert all(t["n_prompts"] == 2 for t in res["scores"]["tags"].values())
    config = (geneval_run / "config.yaml").read_text()
    assert "per_tag: 2" in config
    recs = _records(geneval_run)
    assert [json.loads(r["metadata"]) for r in recs[::2]] == [full[k] for k in chosen]
    # a limited run draws the images the full run would: seeds come from the prompt's index in the full set
    assert [r["seed"] for r in recs] == [derive_seed(0, "geneval/shapes/test", k, j) for k in chosen for j in (0, 1)]


def test_cli_limit_is_per_tag_on_compbench(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", "--suite", "compbench", "--policy", "oracle", "--limit", "1", "-n", "1",
                                 "--no-save-images", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    res = _results(tmp_path / "r")
    assert sorted(res["scores"]["tags"]) == ["color", "numeracy", "spatial"]
    assert res["counts"]["expected"] == 3 and res["limit"]["per_tag"] == 1
    assert "limited to 1 prompt(s) per tag" in result.output
    # no images saved, nothing to lay out; the official score files are still written
    assert not list((tmp_path / "r" / "compbench").rglob("samples"))
    assert (tmp_path / "r" / "compbench" / "numeracy" / "annotation_num" / "vqa_result.json").is_file()


# ------------------------------------------------------------------------------- open world (no scoring)


def _open_ctx(suite_name: str, prompts: Path | None = None, n: int | None = None):
    from irisbench.evaluation.layouts import LayoutContext
    from irisbench.suites import load_suite, resolve_prompts

    suite = load_suite(suite_name)
    return LayoutContext(suite, "open", (lambda: resolve_prompts(suite, "open", None, prompts)[0])
                         if prompts else None, n)


def test_open_world_geneval_folder_reads_the_official_metadata_at_any_size(tmp_path: Path) -> None:
    from irisbench.evaluation.layouts import check_coverage, read_layout
    from irisbench.protocols.geneval_prompts import generate_official_metadata

    items = generate_official_metadata(seed=43)[:3]
    for i, item in enumerate(items):
        (tmp_path / f"{i:05d}" / "samples").mkdir(parents=True)
        (tmp_path / f"{i:05d}" / "metadata.jsonl").write_text(json.dumps(item) + "\n")
        for k in range(2):
            _write_png(tmp_path / f"{i:05d}" / "samples" / f"{k:04d}.png", size=48 + 16 * i)  # README's 0000.png
    (tmp_path / "00001" / "grid.png").write_bytes(b"ignored")
    read = read_layout(tmp_path, _open_ctx("geneval"))
    assert read.layout == "geneval" and read.info["world"] == "open" and read.items == items
    coverage = check_coverage(read, 2, "open")
    assert len(coverage.present) == 6 and not any(coverage.problems().values())


def test_open_world_compbench_folder_at_ten_images_per_prompt(reference: Path, tmp_path: Path) -> None:
    from irisbench.evaluation.layouts import check_coverage, read_layout
    from irisbench.protocols import compbench as cb

    folder = next(p for p in (reference / "t2i-compbench").rglob("texture_val.txt")).parent
    prompts = cb.load_prompt_file(folder / "texture_val.txt")
    samples = tmp_path / "texture" / "samples"
    samples.mkdir(parents=True)
    _write_png(tmp_path / "one.png", size=64)
    png = (tmp_path / "one.png").read_bytes()
    for i, prompt in enumerate(prompts):
        for k in range(10):  # the official 10 per prompt, global index 10 i + k (found without -n)
            (samples / f"{prompt}_{10 * i + k:06d}.png").write_bytes(png)
    (samples / f"{prompts[7]}_{10 * 7 + 3:06d}.png").unlink()
    read = read_layout(tmp_path / "texture", _open_ctx("compbench", folder))
    assert read.info["categories"] == ["texture"] and [it["prompt"] for it in read.items] == prompts
    coverage = check_coverage(read, 10, "open")
    assert len(coverage.present) == 10 * len(prompts) - 1 and coverage.missing == [(7, 3)]
