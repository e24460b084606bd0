"""``eval --images`` on folders made the way the official scripts make them: the images per prompt read from
the folder (T2I-CompBench's 10, one per prompt, uneven counts, extra images), prompt sets that are a strict
subset of a known set, and the hints given for folders that cannot be scored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from irisbench.cli import app
from irisbench.evaluation.evaluate import EvalOptions, evaluate

runner = CliRunner()


def _records(run: Path) -> list[dict]:
    lines = (run / "records.jsonl").read_text(encoding="utf-8").splitlines()
    return sorted((json.loads(x) for x in lines if x.strip()), key=lambda r: (r["prompt_index"], r["sample_index"]))


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text(encoding="utf-8"))


def _ok(args: list[str], out: Path) -> dict:
    result = runner.invoke(app, ["eval", *args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return _results(out)


def _fails(args: list[str], out: Path, *needles: str) -> str:
    result = runner.invoke(app, ["eval", *args, "--out", str(out)])
    assert result.exit_code != 0, result.output
    text = " ".join(result.output.split())
    assert text.startswith("error:") and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in text, text
    assert not (out / "results.json").exists()
    return text


@pytest.fixture(scope="module")
def cb10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shapes-world CompBench run at T2I-CompBench's 10 images per prompt (1 prompt per category)."""
    run = tmp_path_factory.mktemp("cb10") / "run"
    evaluate(EvalOptions(policy="random", suite="compbench", limit_per_tag=1, images_per_prompt=10), run,
             progress=False)
    return run


@pytest.fixture(scope="module")
def gen2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-policy GenEval run (1 prompt per tag, 2 images each)."""
    run = tmp_path_factory.mktemp("gen2") / "run"
    evaluate(EvalOptions(policy="random", limit_per_tag=1, images_per_prompt=2), run, progress=False)
    return run


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


# ------------------------------------------------------------------------------ images per prompt


def test_compbench_folder_at_ten_images_per_prompt_scores_all_ten(cb10: Path, tmp_path: Path) -> None:
    folder = cb10 / "compbench"
    for flags in ([], ["--allow-missing"]):
        out = tmp_path / f"o{len(flags)}"
        res = _ok(["--images", str(folder), "--limit", "1", *flags], out)
        assert res["images_per_prompt"] == 10
        assert res["counts"]["expected"] == res["counts"]["actual"] == 30 and res["counts"]["complete"]
        assert res["scores"] == _results(cb10)["scores"]
        assert sorted((r["prompt_index"], r["sample_index"]) for r in _records(out)) == \
            [(i, k) for i in range(3) for k in range(10)]
    # -n that disagrees with the file names: one line naming both numbers, also with --allow-missing
    for flags in ([], ["--allow-missing"]):
        _fails(["--images", str(folder), "--limit", "1", "-n", "4", *flags], tmp_path / "bad",
               "numbered at 10 images per prompt", "-n 4", "-n 10")


def test_geneval_folder_with_one_image_per_prompt_uses_the_folders_count(gen2: Path, tmp_path: Path) -> None:
    folder = _copy(gen2 / "geneval", tmp_path / "g")
    for p in folder.glob("*/samples/00001.png"):
        p.unlink()
    res = _ok(["--images", str(folder)], tmp_path / "o")
    assert res["images_per_prompt"] == 1 and res["counts"]["expected"] == res["counts"]["actual"] == 6
    want = [r for r in _records(gen2) if r["sample_index"] == 0]
    assert [r["correct"] for r in _records(tmp_path / "o")] == [r["correct"] for r in want]
    _fails(["--images", str(folder), "-n", "2"], tmp_path / "o2", "1 image per prompt", "-n 2", "-n 1")


def test_uneven_counts_name_the_prompts_that_differ(gen2: Path, tmp_path: Path) -> None:
    folder = _copy(gen2 / "geneval", tmp_path / "g")
    (folder / "00003" / "samples" / "00001.png").unlink()
    _fails(["--images", str(folder)], tmp_path / "o", "images per prompt differ", "5 prompts have 2",
           "prompt 3 has 1", "--allow-missing")
    res = _ok(["--images", str(folder), "--allow-missing"], tmp_path / "o2")
    assert res["images_per_prompt"] == 2 and res["counts"]["actual"] == 11
    assert res["counts"]["image_check"]["missing"] == 1


def test_allow_missing_never_drops_extra_images(gen2: Path, tmp_path: Path) -> None:
    folder = _copy(gen2 / "geneval", tmp_path / "g")
    shutil.copy(folder / "00001" / "samples" / "00000.png", folder / "00001" / "samples" / "00002.png")
    # -n 2 would leave prompt 1's third image unscored: refused, even with --allow-missing
    for flags in ([], ["--allow-missing"]):
        _fails(["--images", str(folder), "-n", "2", *flags], tmp_path / "o", "prompt 1 has 3", "-n 2")
    # without -n the folder's largest count is used and every image is scored (the others counted missing)
    res = _ok(["--images", str(folder), "--allow-missing"], tmp_path / "o2")
    assert res["images_per_prompt"] == 3 and res["counts"]["actual"] == 13
    assert res["counts"]["image_check"]["missing"] == 5
    # an image whose sample index is past the count is refused, not dropped
    (folder / "00001" / "samples" / "00002.png").rename(folder / "00001" / "samples" / "00007.png")
    (folder / "00001" / "samples" / "00001.png").unlink()
    _fails(["--images", str(folder), "--allow-missing"], tmp_path / "o3", "00001/samples/00007.png",
           "sample index 7")


def test_run_folder_with_another_n_names_both_numbers(gen2: Path, tmp_path: Path) -> None:
    _fails(["--images", str(gen2), "-n", "4"], tmp_path / "o", "2 images per prompt", "-n 4")


def test_compbench_names_at_two_per_prompt_are_read_without_n(tmp_path: Path) -> None:
    run = tmp_path / "cb2"
    evaluate(EvalOptions(policy="random", suite="compbench", limit_per_tag=2, images_per_prompt=2), run,
             progress=False)
    res = _ok(["--images", str(run / "compbench"), "--limit", "2"], tmp_path / "o")
    assert res["images_per_prompt"] == 2 and res["scores"] == _results(run)["scores"]


# ------------------------------------------------------------------------------ subsets of known sets


@pytest.fixture(scope="module")
def test_split_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The oracle's images of the whole shapes test split (792 prompts), one per prompt, as a GenEval folder."""
    run = tmp_path_factory.mktemp("full") / "run"
    evaluate(EvalOptions(policy="oracle", images_per_prompt=1), run, progress=False)
    return run / "geneval"


def test_folder_missing_its_last_prompt_is_named_and_refused(test_split_folder: Path, tmp_path: Path) -> None:
    folder = _copy(test_split_folder, tmp_path / "g")
    shutil.rmtree(folder / "00791")
    _fails(["--images", str(folder)], tmp_path / "o", "791 of the 792 prompts of geneval shapes test",
           "missing: 00791", "--allow-missing")
    result = runner.invoke(app, ["eval", "--images", str(folder), "--allow-missing", "--out", str(tmp_path / "o2")])
    assert result.exit_code == 0, result.output
    assert "scored a subset: 791 of the 792 prompts of geneval shapes test (1 prompt(s) missing, first: 00791)" \
        in " ".join(result.output.split())
    res = _results(tmp_path / "o2")
    p = res["prompts"]
    assert p["subset_of"] == "geneval shapes test" and p["n_prompts_missing"] == 1 and p["missing_prompts"] == [791]
    assert p["name"] == "791 of the 792 prompts of geneval shapes test" and p["n_prompts"] == 791
    assert res["counts"]["expected"] == res["counts"]["actual"] == 791


def test_subset_of_the_official_553_is_named(tmp_path: Path) -> None:
    from irisbench.evaluation.eval_plan import EvalError, geneval_folder_prompts
    from irisbench.protocols.geneval_prompts import generate_official_metadata
    from irisbench.suites import load_suite

    suite = load_suite("geneval")
    items = generate_official_metadata(seed=43)
    sub = items[:100] + items[101:552]
    with pytest.raises(EvalError, match=r"551 of the 553 official prompts; missing: 00100, 00552"):
        geneval_folder_prompts(suite, "open", sub, EvalOptions(images="x"))
    named = geneval_folder_prompts(suite, "open", sub, EvalOptions(images="x", allow_missing=True))
    assert named["subset_of"] == "official" and named["missing_prompts"] == [100, 552]
    assert named["n_prompts_missing"] == 2
    # not a subset (a prompt that is not one of the 553): still the folder's own set
    other = [*sub[:-1], {**sub[-1], "prompt": "a photo of something else"}]
    assert geneval_folder_prompts(suite, "open", other, EvalOptions(images="x"))["name"] == "folder"


# ------------------------------------------------------------------------------------------- hints


def test_all_jpg_folder_says_the_images_are_jpg(gen2: Path, tmp_path: Path) -> None:
    from PIL import Image

    folder = _copy(gen2 / "geneval", tmp_path / "g")
    for p in folder.glob("*/samples/*.png"):
        with Image.open(p) as im:
            im.convert("RGB").save(p.with_suffix(".jpg"), format="JPEG")
        p.unlink()
    text = _fails(["--images", str(folder)], tmp_path / "o", "the images are .jpg (12 files", "only .png is read",
                  "convert them to PNG")
    assert "--limit" not in text
    # one prompt's images as .jpg: that prompt is named, with the cause
    folder2 = _copy(gen2 / "geneval", tmp_path / "g2")
    for p in (folder2 / "00002" / "samples").glob("*.png"):
        with Image.open(p) as im:
            im.convert("RGB").save(p.with_suffix(".jpg"), format="JPEG")
        p.unlink()
    text = _fails(["--images", str(folder2)], tmp_path / "o2", "prompt 2", "00002/samples", ".jpg",
                  "only .png is read")
    assert "--limit" not in text


def test_nonexistent_path_says_it_does_not_exist(tmp_path: Path) -> None:
    text = _fails(["--images", str(tmp_path / "nowhere")], tmp_path / "o", "nowhere: does not exist")
    assert "not a folder" not in text
    (tmp_path / "file.png").write_bytes(b"x")
    _fails(["--images", str(tmp_path / "file.png")], tmp_path / "o2", "file.png: not a folder")


def test_compbench_folder_no_category_fits_does_not_suggest_category(cb10: Path, tmp_path: Path) -> None:
    anon = tmp_path / "anon"
    shutil.copytree(cb10 / "compbench" / "color", anon)
    first = sorted((anon / "samples").iterdir())[0]
    first.rename(first.with_name("a photo of a unicorn_000000.png"))
    text = _fails(["--images", str(anon), "--limit", "1"], tmp_path / "o", "'a photo of a unicorn'",
                  "no category of the suite")
    assert "--category" not in text


def _tiny_png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (120, 30, 200)).save(path)


def test_open_world_numeracy_only_folder_is_read(reference: Path, tmp_path: Path) -> None:
    from irisbench.evaluation.layouts import check_coverage, read_layout
    from irisbench.protocols import compbench as cb

    folder = reference / "t2i-compbench"
    prompts = cb.load_prompt_file(folder / "numeracy_val.txt")[:2]
    anon = tmp_path / "numbers"
    for i, prompt in enumerate(prompts):
        for k in range(10):
            _tiny_png(anon / "samples" / f"{prompt}_{10 * i + k:06d}.png")
    from irisbench.evaluation.layouts import LayoutContext
    from irisbench.suites import load_suite, resolve_prompts

    suite = load_suite("compbench")
    all_items = resolve_prompts(suite, "open", None, folder)[0]
    assert "numeracy" in {it["tag"] for it in all_items}
    numeracy = [it for it in all_items if it["tag"] == "numeracy"]
    read = read_layout(anon, LayoutContext(suite, "open", lambda: [*numeracy[:2], *[it for it in all_items
                                                                                    if it["tag"] == "color"]]))
    assert read.info["categories"] == ["numeracy"] and read.n == 10
    assert len(check_coverage(read, 10, "open").present) == 20


# --------------------------------------------------------------------------- T2I-CompBench folders


def test_multi_category_folder_accepts_val_names(cb10: Path, tmp_path: Path) -> None:
    folder = _copy(cb10 / "compbench", tmp_path / "cb")
    (folder / "color").rename(folder / "color_val")
    res = _ok(["--images", str(folder), "--limit", "1"], tmp_path / "o")
    assert res["scores"] == _results(cb10)["scores"] and res["prompts"]["categories"] == ["numeracy", "spatial",
                                                                                         "color"]
    # the same category twice (color/ and color_val/) is refused
    shutil.copytree(folder / "color_val", folder / "color")
    _fails(["--images", str(folder), "--limit", "1"], tmp_path / "o2", "color", "color_val", "twice")


def test_category_the_world_does_not_score_is_named(cb10: Path, tmp_path: Path) -> None:
    folder = _copy(cb10 / "compbench", tmp_path / "cb")
    shutil.copytree(folder / "color", folder / "3d_spatial")
    _fails(["--images", str(folder), "--limit", "1"], tmp_path / "o", "'3d_spatial' is a T2I-CompBench category",
           "not scored")


def test_shapes_compbench_file_names_use_compbench_wording(tmp_path: Path) -> None:
    run = tmp_path / "run"
    evaluate(EvalOptions(policy="random", suite="compbench", limit_per_tag=13, images_per_prompt=1,
                         batch_size=64), run, progress=False)
    spatial = [json.loads(r["metadata"]) for r in _records(run) if r["tag"] == "spatial"]
    names = sorted(p.name for p in (run / "compbench" / "spatial" / "samples").iterdir())
    assert names == sorted(f"{it['rule_prompt']}_{k:06d}.png" for k, it in enumerate(spatial))
    above = [it for it in spatial if " above " in it["prompt"]]
    assert above and all(" on the top of " in it["rule_prompt"] for it in above)
    assert not any(" above " in n for n in names)
    # and they read back
    res = _ok(["--images", str(run / "compbench"), "--limit", "13"], tmp_path / "o")
    assert res["scores"] == _results(run)["scores"]


def test_compbench_official_score_files_hold_the_records_scores(cb10: Path) -> None:
    res = _results(cb10)
    records = _records(cb10)
    files = res["official"]["score_files"]
    assert sorted(files) == ["color", "numeracy", "spatial"]
    folders = {"color": "annotation_blip", "spatial": "labels/annotation_obj_detection_2d",
               "numeracy": "annotation_num"}
    for category, folder in folders.items():
        base = cb10 / "compbench" / category / folder
        rows = json.loads((base / "vqa_result.json").read_text())
        mine = [r for r in records if r["tag"] == category]  # one prompt per category: index = sample
        assert [row["question_id"] for row in rows] == list(range(10))
        scores = [r["score"] for r in mine]
        if category == "color":  # BLIP-VQA: 4-decimal strings; the average over them
            assert [row["answer"] for row in rows] == [f"{s:.4f}" for s in scores]
            avg = sum(float(f"{s:.4f}") for s in scores) / 10
            assert (base / "blip_vqa_score.txt").read_text() == f"BLIP-VQA score:{avg}"
        else:
            assert [row["answer"] for row in rows] == scores
            avg = sum(scores) / 10
            if category == "spatial":
                assert (base / "avg_score.txt").read_text() == f"score avg:{avg}"
                mapping = json.loads((base / "mapping.json").read_text())
                assert mapping[3] == {"image": sorted((cb10 / "compbench" / "spatial" / "samples").iterdir(),
                                                      key=lambda p: p.name)[3].name, "question_id": 3}
            else:
                assert (base / "score.txt").read_text() == f"total:{sum(scores)} num:10 avg:{avg}"
        assert files[category]["average"] == pytest.approx(res["scores"]["tags"][category]["score"], abs=1e-4)


# ------------------------------------------------------------------------------------ smaller items


def test_eval_help_is_readable_at_80_columns() -> None:
    result = runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert "…" not in result.output and len(lines) < 110, result.output
    assert all(len(line) <= 80 for line in lines)
    text = " ".join(result.output.replace("│", " ").split())
    assert "docs/layouts.md" in text  # where the layouts and their examples are
    for suite in ("GenEval", "T2I-CompBench", "WISE"):  # --prompts says what it is for every suite
        assert suite in text[text.index("--prompts"):text.index("--images-per-prompt")]


def test_external_runs_record_what_they_scored_and_the_images_folder(gen2: Path, reference: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    res = _ok(["--images", str(gen2 / "geneval")], tmp_path / "o")
    assert "generated_now" not in res["counts"] and res["counts"]["scored_now"] == 12
    # an open-world T2I-CompBench folder: the prompts' folder and the images folder are both recorded
    from irisbench.evaluation.eval_plan import external_plan
    from irisbench.protocols import compbench as cb

    # the plan checks the real scorer's weights up front (tests/test_scorer_offline.py); none are cached here
    monkeypatch.setattr("irisbench.scorers.weights.require_weights", lambda *a, **k: None)
    prompts_dir = reference / "t2i-compbench"
    color = cb.load_prompt_file(prompts_dir / "color_val.txt")
    folder = tmp_path / "color"
    for i in range(len(color)):
        _tiny_png(folder / "samples" / f"{color[i]}_{i:06d}.png")
    plan = external_plan(EvalOptions(images=str(folder), prompts_file=str(prompts_dir)))
    assert plan.prompt_prov["folder"] == str(folder.resolve())
    assert plan.prompt_prov["prompts_folder"] == str(prompts_dir)
    assert plan.n == 1 and plan.prompt_prov["categories"] == ["color"]
