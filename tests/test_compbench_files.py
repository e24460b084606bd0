"""T2I-CompBench prompt-file loaders: the official reference files (skipped when absent) and bad files."""

from __future__ import annotations

import collections
import re

import pytest

from irisbench.protocols import compbench as cb

R = "rules"


@pytest.fixture
def compbench_dir(reference):
    path = reference / "t2i-compbench"
    if not path.is_dir():
        pytest.skip(f"T2I-CompBench reference files not found at {path}")
    return path


# ----------------------------------------------------------------------------------- official files

FIRST_LAST = {
    "color": ("a green bench and a blue bowl", "a black bathroom with a black and white shower curtain"),
    "shape": ("an oblong cucumber and a teardrop plum",
              "The big house and the small cabin provided different types of accommodations."),
    "spatial": ("a giraffe next to a lamp", "a pig on the bottom of a wallet"),
    "complex": ("The red hat was on top of the brown coat rack.",
                "The towering, majestic elephants strode through the savanna, their powerful trunks reaching for the "
                "leaves of the trees."),
    "3d_spatial": ("a dog in front of a desk", "a fish in front of a book"),
    "numeracy": ("two boys", "two cups, three paintings, four lamps, and four bananas decorated the art studio"),
}


@pytest.mark.parametrize("category", list(cb.CATEGORIES))
def test_every_val_file_has_300_clean_prompts(compbench_dir, category):
    prompts = cb.load_category_prompts(compbench_dir, category)
    assert len(prompts) == 300
    assert all(p and "\r" not in p and "\n" not in p and p == p.strip() for p in prompts)
    if category in FIRST_LAST:
        assert (prompts[0], prompts[-1]) == FIRST_LAST[category]


def test_crlf_and_missing_final_newline_are_handled(compbench_dir):
    raw = (compbench_dir / "color_val.txt").read_bytes()
    assert b"\r\n" in raw and not raw.endswith(b"\n")  # the quirks this test is about
    assert cb.load_prompt_file(compbench_dir / "color_val.txt")[-1].endswith("shower curtain")
    raw_lf = (compbench_dir / "numeracy_val.txt").read_bytes()
    assert b"\r" not in raw_lf


def test_color_versions(compbench_dir):
    current = cb.load_category_prompts(compbench_dir, "color")
    old = cb.load_category_prompts(compbench_dir, "color", color_version="pre-2025-09")
    assert len(current) == len(old) == 300
    # Measured: the old file has 5 prompts that appear twice (295 unique); the 2025-09-03 edit changed 5 lines.
    assert len(set(old)) == 295 and len(set(current)) == 300
    changed = [i + 1 for i, (a, b) in enumerate(zip(old, current, strict=True)) if a != b]
    assert changed == [228, 229, 272, 288, 300]
    assert old[227] == "a yellow taxi and a black tire" and current[227] == "a yellow taxi and a red tire"


def test_complex_subsets_partition_complex_val(compbench_dir):
    spatial, action = cb.load_complex_subsets(compbench_dir)
    prompts = cb.load_category_prompts(compbench_dir, "complex")
    kinds = collections.Counter(
        "spatial" if cb.normalise_complex_prompt(p) in spatial
        else "action" if cb.normalise_complex_prompt(p) in action else "both"
        for p in prompts
    )
    assert kinds == {"action": 212, "spatial": 58, "both": 30}  # docs/protocols.md §2.1 counts


def test_localities_match_the_documented_counts(compbench_dir):
    spatial = collections.Counter(cb.locality(p) for p in cb.load_category_prompts(compbench_dir, "spatial"))
    assert spatial == {"on the top of": 56, "on the right of": 56, "on the bottom of": 52, "on the left of": 51,
                       "on side of": 37, "next to": 24, "near": 24}
    three_d = collections.Counter(
        cb.locality(p, cb.SPATIAL_3D_LOCALITIES) for p in cb.load_category_prompts(compbench_dir, "3d_spatial")
    )
    assert three_d == {"hidden": 115, "in front of": 102, "behind": 83}


def test_builtin_numeracy_objects_equal_new_objects_txt(compbench_dir):
    assert cb.load_numeracy_objects(compbench_dir / cb.NUMERACY_OBJECTS_FILE) == list(cb.NUMERACY_OBJECTS)
    assert len(cb.NUMERACY_OBJECTS) == 101  # 101 lines (no final newline), duplicates included


def test_rule_parsers_on_whole_files(compbench_dir):
    # Every numeracy prompt parses to 1-5 targets whose counts are the prompt's number words.
    for prompt in cb.load_category_prompts(compbench_dir, "numeracy"):
        targets = cb.numeracy_targets(prompt, method=R)
        assert 1 <= len(targets) <= 5, prompt
    # 2D/3D spatial prompts are "a(n) X <relation> a(n) Y": first/last noun are X and Y (person alias).
    for category in ("spatial", "3d_spatial"):
        for prompt in cb.load_category_prompts(compbench_dir, category):
            words = prompt.split()
            expected = tuple("person" if w in cb.PERSON_ALIASES else w for w in (words[1], words[-1]))
            assert cb.spatial_objects(prompt, method=R) == expected, prompt


def test_rule_chunker_gives_two_chunks_on_two_object_templates(compbench_dir):
    # "a(n) <adj> <noun...> and a(n) <adj> <noun...>" prompts (no prepositions): exactly the two objects.
    template = re.compile(r"(an?|some)? ?[a-z]+ [a-z ]+ and (an?|some)? ?[a-z]+ [a-z ]+\.?")
    counted = 0
    for category in ("color", "shape", "texture"):
        for prompt in cb.load_category_prompts(compbench_dir, category):
            if template.fullmatch(prompt) and not re.search(r"\b(with|of|in|on|sitting|next|near)\b", prompt):
                counted += 1
                phrases, _ = cb.noun_phrases(prompt, method=R)
                assert len(phrases) == 2, (prompt, phrases)
                assert all(prompt.find(p) >= 0 for p in phrases)
    assert counted == 696  # measured: 240 color + 216 shape + 240 texture


# -------------------------------------------------------------------------------------- bad files


def test_line_endings_bom_and_final_newline(tmp_path):
    expected = ["a red book and a blue bag", "a cat next to a dog"]
    variants = {
        "lf.txt": b"a red book and a blue bag\na cat next to a dog\n",
        "crlf.txt": b"a red book and a blue bag\r\na cat next to a dog\r\n",
        "nofinal.txt": b"a red book and a blue bag\r\na cat next to a dog",
        "mixed.txt": b"a red book and a blue bag\r\na cat next to a dog\n",
        "bom.txt": b"\xef\xbb\xbfa red book and a blue bag\na cat next to a dog",
    }
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
        assert cb.load_prompt_file(tmp_path / name) == expected, name


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"\r\n\n", "is empty"),
        (b"a cat\n\na dog\n", r":2: blank line"),
        (b"a cat\na dog\n\n", r":3: blank line"),
        (b"a cat\n \na dog\n", r":2: blank line"),
        (b"a cat\nsome caf\xe9\n", r":2: not valid UTF-8"),
        (b"a cat\na dog_1\n", r":2: prompt contains '_'"),
        (b"a cat/dog\n", r":1: prompt contains '/'"),
        (b"a cat\ra dog\n", r":1: stray carriage return"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, data, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    with pytest.raises(cb.PromptFileError, match=message) as err:
        cb.load_prompt_file(path)
    assert str(path) in str(err.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(cb.PromptFileError, match="not found"):
        cb.load_prompt_file(tmp_path / "absent.txt")
    with pytest.raises(cb.PromptFileError, match="is a directory"):
        cb.load_prompt_file(tmp_path)
    bad = tmp_path / "objects.txt"
    bad.write_text("cup cups\n")
    with pytest.raises(cb.PromptFileError, match=":1: expected 'singular - plural'"):
        cb.load_numeracy_objects(bad)
