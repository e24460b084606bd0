"""GenEval metadata schema: validate_metadata / load_metadata error messages and the reference file."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from irisbench.protocols.geneval import (
    COCO_CLASSES,
    GENEVAL_COLORS,
    MetadataError,
    load_metadata,
    validate_metadata,
)


def reference_dir() -> Path:
    env = os.environ.get("IRISBENCH_REFERENCE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "reference"


GOOD_POSITION = {"tag": "position",
                 "include": [{"class": "teddy bear", "count": 1},
                             {"class": "dog", "count": 1, "position": ["right of", 0]}],
                 "prompt": "a photo of a dog right of a teddy bear"}
GOOD_COUNTING = {"tag": "counting", "include": [{"class": "clock", "count": 2}],
                 "exclude": [{"class": "clock", "count": 3}], "prompt": "a photo of two clocks"}


def test_constants() -> None:
    assert len(COCO_CLASSES) == 80 == len(set(COCO_CLASSES))
    assert COCO_CLASSES[0] == "person" and COCO_CLASSES[-1] == "toothbrush"
    assert {"computer mouse", "tv remote", "computer keyboard"} <= set(COCO_CLASSES)
    assert not {"mouse", "remote", "keyboard"} & set(COCO_CLASSES)
    assert GENEVAL_COLORS[0] == "red" and GENEVAL_COLORS[-1] == "white" and len(GENEVAL_COLORS) == 10


def test_reference_object_names_match_constant() -> None:
    path = reference_dir() / "geneval" / "object_names.txt"
    if not path.is_file():
        pytest.skip(f"reference file absent: {path}")
    assert tuple(path.read_text().splitlines()) == COCO_CLASSES


def test_valid_objects_pass_unchanged() -> None:
    assert validate_metadata(GOOD_POSITION, classes=COCO_CLASSES, where="x") is GOOD_POSITION
    assert validate_metadata(GOOD_COUNTING, classes=COCO_CLASSES, where="x") is GOOD_COUNTING
    # tuple positions (as built in Python by the official generator) are accepted
    tup = {**GOOD_POSITION, "include": [GOOD_POSITION["include"][0],
                                        {"class": "dog", "count": 1, "position": ("right of", 0)}]}
    validate_metadata(tup, classes=None, where="x")
    # any class name when classes is None; extra top-level keys are allowed
    validate_metadata({"tag": "single_object", "include": [{"class": "circle", "count": 1}],
                       "prompt": "a photo of a circle", "note": "shapes"}, classes=None, where="x")


def _clause(**kw) -> dict:
    return {"tag": "colors", "include": [{"class": "car", "count": 1, **kw}], "prompt": "p"}


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ([1, 2], "JSON object"),
        ({"include": [{"class": "car", "count": 1}], "prompt": "p"}, "'tag'"),
        ({"tag": "colors", "prompt": "p"}, "'include'"),
        ({"tag": "colors", "include": [{"class": "car", "count": 1}]}, "'prompt'"),
        ({"tag": "counts", "include": [{"class": "car", "count": 1}], "prompt": "p"}, "tag 'counts'"),
        ({"tag": "colors", "include": [{"class": "car", "count": 1}], "prompt": 3}, "prompt"),
        ({"tag": "colors", "include": [], "prompt": "p"}, "include must be a non-empty list"),
        ({"tag": "colors", "include": {"class": "car"}, "prompt": "p"}, "include must be a non-empty list"),
        ({"tag": "colors", "include": ["car"], "prompt": "p"}, "include[0] must be an object"),
        ({"tag": "colors", "include": [{"count": 1}], "prompt": "p"}, "include[0].class is missing"),
        ({"tag": "colors", "include": [{"class": "car"}], "prompt": "p"}, "include[0].count is missing"),
        (_clause(colour="red"), "include[0] has unknown key(s) ['colour']"),
        ({"tag": "colors", "include": [{"class": "carr", "count": 1}], "prompt": "p"},
         "include[0].class 'carr'"),
        ({"tag": "colors", "include": [{"class": 5, "count": 1}], "prompt": "p"}, "include[0].class"),
        (_clause(color="grey"), "include[0].color 'grey'"),
        (_clause(position="left of"), "include[0].position must be a [relation, group index] pair"),
        (_clause(position=["left of", 0, 1]), "include[0].position must be a [relation, group index] pair"),
        (_clause(position=["left of", 0]), "include[0].position index 0 has no earlier include group"),
        ({"tag": "position", "include": [{"class": "cat", "count": 1},
                                         {"class": "dog", "count": 1, "position": ["left of", 1]}],
          "prompt": "p"}, "include[1].position index 1 must reference an earlier include group (0..0)"),
        ({"tag": "position", "include": [{"class": "cat", "count": 1},
                                         {"class": "dog", "count": 1, "position": ["left of", 5]}],
          "prompt": "p"}, "include[1].position index 5"),
        ({"tag": "position", "include": [{"class": "cat", "count": 1},
                                         {"class": "dog", "count": 1, "position": ["left of", -1]}],
          "prompt": "p"}, "include[1].position index -1"),
        ({"tag": "position", "include": [{"class": "cat", "count": 1},
                                         {"class": "dog", "count": 1, "position": ["near", 0]}],
          "prompt": "p"}, "include[1].position relation 'near'"),
        ({**GOOD_COUNTING, "exclude": {"class": "clock", "count": 3}}, "exclude must be a list"),
        ({**GOOD_COUNTING, "exclude": [{"class": "clock", "count": 0}]}, "exclude[0].count"),
        ({**GOOD_COUNTING, "exclude": [{"class": "clock", "count": 3, "color": "red"}]},
         "exclude[0] has unknown key(s) ['color']"),
    ],
)
def test_validate_errors_name_where_and_field(obj: object, field: str) -> None:
    with pytest.raises(MetadataError) as info:
        validate_metadata(obj, classes=COCO_CLASSES, where="prompts.jsonl:12")
    msg = str(info.value)
    assert msg.startswith("prompts.jsonl:12: ")
    assert field in msg


@pytest.mark.parametrize("count", [0, -1, True, 1.0, "1", None])
def test_count_must_be_positive_int(count: object) -> None:
    expected = r"prompts\.jsonl:3: include\[0\]\.count must be a positive integer"
    with pytest.raises(MetadataError, match=expected):
        validate_metadata(_clause(count=count), classes=None, where="prompts.jsonl:3")


def test_metadata_error_is_value_error() -> None:
    assert issubclass(MetadataError, ValueError)


# ------------------------------------------------------------------------------------------------- load


def _write(tmp_path: Path, content: str | bytes, name: str = "meta.jsonl") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def test_load_skips_blank_lines_and_counts_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, json.dumps(GOOD_POSITION) + "\n\n  \n" + json.dumps(GOOD_COUNTING) + "\n\n")
    assert load_metadata(path, classes=COCO_CLASSES) == [GOOD_POSITION, GOOD_COUNTING]
    # error on line 4 (after two blank lines) names line 4
    bad = dict(GOOD_COUNTING, tag="nope")
    path = _write(tmp_path, json.dumps(GOOD_POSITION) + "\n\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(MetadataError, match=rf"^{path}:4: tag 'nope'"):
        load_metadata(path)


def test_load_bad_json_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path, json.dumps(GOOD_COUNTING) + '\n{"tag": "colors", \n')
    with pytest.raises(MetadataError) as info:
        load_metadata(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:2: invalid JSON: ")
    assert "column" in msg


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ({"include": [{"class": "car", "count": 1}], "prompt": "p"}, "'tag'"),
        ({"tag": "colors", "prompt": "p"}, "'include'"),
        ({"tag": "colors", "include": [{"class": "car", "count": 1}]}, "'prompt'"),
        ({"tag": "color", "include": [{"class": "car", "count": 1}], "prompt": "p"}, "tag 'color'"),
        (_clause(count=0), "include[0].count"),
        (_clause(color="grey"), "include[0].color 'grey'"),
        ({"tag": "position", "include": [{"class": "cat", "count": 1},
                                         {"class": "dog", "count": 1, "position": ["left of", 2]}],
          "prompt": "p"}, "include[1].position index 2"),
        ({"tag": "colors", "include": [{"class": "mouse", "count": 1}], "prompt": "p"},
         "include[0].class 'mouse'"),
    ],
)
def test_load_errors_name_file_line_field(tmp_path: Path, line: dict, field: str) -> None:
    path = _write(tmp_path, json.dumps(GOOD_COUNTING) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(MetadataError) as info:
        load_metadata(path, classes=COCO_CLASSES)
    msg = str(info.value)
    assert msg.startswith(f"{path}:2: ")
    assert field in msg


def test_load_classes_only_checked_when_given(tmp_path: Path) -> None:
    shapes = {"tag": "single_object", "include": [{"class": "circle", "count": 1}],
              "prompt": "a photo of a circle"}
    path = _write(tmp_path, json.dumps(shapes) + "\n")
    assert load_metadata(path) == [shapes]
    with pytest.raises(MetadataError, match=r":1: include\[0\]\.class 'circle'"):
        load_metadata(path, classes=COCO_CLASSES)


def test_load_empty_file(tmp_path: Path) -> None:
    for content in ("", "\n\n   \n"):
        path = _write(tmp_path, content)
        with pytest.raises(MetadataError, match=rf"^{path}: metadata file is empty"):
            load_metadata(path)


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.jsonl"
    with pytest.raises(MetadataError, match=rf"^{path}: metadata file not found"):
        load_metadata(path)
    with pytest.raises(MetadataError, match="is a directory"):
        load_metadata(tmp_path)


def test_load_non_utf8(tmp_path: Path) -> None:
    first = (json.dumps(GOOD_COUNTING) + "\n").encode()
    path = _write(tmp_path, first + b'{"tag": "colors\xff"}\n')
    with pytest.raises(MetadataError) as info:
        load_metadata(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:2: not valid UTF-8")
    assert f"byte offset {len(first) + 15}" in msg


def test_load_accepts_utf8_bom(tmp_path: Path) -> None:
    path = _write(tmp_path, b"\xef\xbb\xbf" + json.dumps(GOOD_COUNTING).encode() + b"\n")
    assert load_metadata(path) == [GOOD_COUNTING]


def test_reference_metadata_loads_with_tag_counts() -> None:
    path = reference_dir() / "geneval" / "evaluation_metadata.jsonl"
    if not path.is_file():
        pytest.skip(f"reference file absent: {path}")
    items = load_metadata(path, classes=COCO_CLASSES)
    assert len(items) == 553
    counts = Counter(item["tag"] for item in items)
    tags = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
    assert [counts[t] for t in tags] == [80, 99, 80, 94, 100, 100]
    assert items[353] == GOOD_POSITION  # line 354, the docs/protocols.md example
