"""GenEval prompt generator: byte-for-byte reproduction of the official evaluation_metadata.jsonl."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import pytest

from irisbench.protocols.geneval import COCO_CLASSES, GENEVAL_COLORS, load_metadata, validate_metadata
from irisbench.protocols.geneval_prompts import (
    OFFICIAL_METADATA_SHA256,
    generate_official_metadata,
    generation_prompts,
    make_plural,
    metadata_jsonl,
    with_article,
    write_metadata_jsonl,
)

# Published hash of the official file (docs/protocols.md §5), literal so the test cannot drift with the module.
EXPECTED_SHA256 = "5c48e0813e812e3c373fa5c8ed07a8f0a483be30272b4427b0559c8048e67c13"


def reference_dir() -> Path:
    env = os.environ.get("IRISBENCH_REFERENCE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "reference"


@pytest.fixture(scope="module")
def official() -> list[dict]:
    return generate_official_metadata()


def test_sha256_matches_official(official: list[dict], tmp_path: Path) -> None:
    assert OFFICIAL_METADATA_SHA256 == EXPECTED_SHA256
    assert hashlib.sha256(metadata_jsonl(official).encode("utf-8")).hexdigest() == EXPECTED_SHA256
    path = tmp_path / "evaluation_metadata.jsonl"
    write_metadata_jsonl(official, path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == EXPECTED_SHA256


def test_first_lines_and_format(official: list[dict]) -> None:
    lines = metadata_jsonl(official).split("\n")
    assert lines[-1] == ""  # final newline, LF only
    assert lines[0] == '{"tag": "single_object", "include": [{"class": "bench", "count": 1}], ' \
                       '"prompt": "a photo of a bench"}'
    assert lines[179] == ('{"tag": "counting", "include": [{"class": "clock", "count": 2}], '
                          '"exclude": [{"class": "clock", "count": 3}], "prompt": "a photo of two clocks"}')
    assert lines[353] == ('{"tag": "position", "include": [{"class": "teddy bear", "count": 1}, '
                          '{"class": "dog", "count": 1, "position": ["right of", 0]}], '
                          '"prompt": "a photo of a dog right of a teddy bear"}')


def test_suite_statistics(official: list[dict]) -> None:
    assert len(official) == 553
    tags = Counter(item["tag"] for item in official)
    assert tags == {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94,
                    "position": 100, "color_attr": 100}
    assert sorted(item["include"][0]["class"] for item in official[:80]) == sorted(COCO_CLASSES)
    counts = Counter(item["include"][0]["count"] for item in official if item["tag"] == "counting")
    assert counts == {2: 26, 3: 28, 4: 26}
    rels = Counter(item["include"][1]["position"][0] for item in official if item["tag"] == "position")
    assert rels == {"below": 28, "right of": 27, "above": 26, "left of": 19}
    for item in official:
        validate_metadata(item, classes=COCO_CLASSES, where="generated")
        for clause in item["include"]:
            if "color" in clause:
                assert clause["class"] != "person"
        if item["tag"] == "color_attr":
            a, b = item["include"]
            assert a["class"] != b["class"] and a["color"] != b["color"]
        if item["tag"] == "counting":
            assert item["exclude"] == [{"class": item["include"][0]["class"],
                                        "count": item["include"][0]["count"] + 1}]


def test_matches_reference_files(official: list[dict]) -> None:
    folder = reference_dir() / "geneval"
    if not folder.is_dir():
        pytest.skip(f"reference folder absent: {folder}")
    assert metadata_jsonl(official).encode() == (folder / "evaluation_metadata.jsonl").read_bytes()
    assert load_metadata(folder / "evaluation_metadata.jsonl", classes=COCO_CLASSES) == official
    prompts = (folder / "generation_prompts.txt").read_text(encoding="utf-8")
    assert prompts == "".join(p + "\n" for p in generation_prompts(official))


def test_article_and_plural_quirks() -> None:
    assert with_article("umbrella") == "an umbrella"
    assert with_article("orange") == "an orange"
    assert with_article("hair drier") == "a hair drier"
    assert [make_plural(w) for w in ("bench", "sheep", "knife", "bus", "wine glass", "skis")] == \
        ["benchs", "sheeps", "knifes", "buses", "wine glasses", "skises"]


def test_other_seed_and_generic_classes() -> None:
    other = generate_official_metadata(seed=0, n=20)
    assert metadata_jsonl(other) != metadata_jsonl(generate_official_metadata())
    assert other == generate_official_metadata(seed=0, n=20)  # deterministic
    shapes = ("circle", "square", "triangle", "diamond")
    items = generate_official_metadata(seed=1, n=30, classes=shapes, colors=GENEVAL_COLORS[:3])
    assert Counter(i["tag"] for i in items)["single_object"] == 4
    for item in items:
        validate_metadata(item, classes=shapes, where="shapes")
    # no "person" in the list: every class can be colored
    colored = {c["class"] for i in items for c in i["include"] if "color" in c}
    assert colored == set(shapes)
    with pytest.raises(ValueError):
        generate_official_metadata(classes=("a", "b"))
