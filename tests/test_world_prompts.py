"""Shapes-world GenEval prompts: schema, counts, parser, splits, and the eval-size simulation."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from irisbench.protocols.geneval import validate_metadata
from irisbench.world.prompts import (
    DEFAULT_PER_TAG,
    PROMPT_WORDS,
    SEEN_PER_TAG,
    SPLIT_KIND,
    UnknownWordsError,
    all_prompts,
    build_splits,
    eval_text_count,
    make_metadata,
    parse_prompt,
    seen_split,
    split_overlap,
)
from irisbench.world.vocab import SHAPES, TAGS

# n shapes, 10 colors, 3 counts, 4 relations: n, n(n-1), 3n, 10n, 4n(n-1), n(n-1) * 10 * 9
EXPECTED_COUNTS = {"single_object": 10, "two_object": 90, "counting": 30, "colors": 100, "position": 360,
                   "color_attr": 8100}


def test_prompt_counts_per_tag() -> None:
    assert {t: len(all_prompts(t)) for t in TAGS} == EXPECTED_COUNTS
    for t in TAGS:
        texts = [m["prompt"] for m in all_prompts(t)]
        assert len(set(texts)) == len(texts)
        assert all(m["tag"] == t for m in all_prompts(t))
    with pytest.raises(ValueError, match="unknown GenEval tag"):
        all_prompts("spatial")


def test_hand_written_examples() -> None:
    ex = {m["prompt"]: m for t in TAGS for m in all_prompts(t)}
    assert ex["a photo of a circle"] == {"tag": "single_object", "include": [{"class": "circle", "count": 1}],
                                         "prompt": "a photo of a circle"}
    assert json.dumps(ex["a photo of four triangles"]) == (
        '{"tag": "counting", "include": [{"class": "triangle", "count": 4}], '
        '"exclude": [{"class": "triangle", "count": 5}], "prompt": "a photo of four triangles"}')
    assert json.dumps(ex["a photo of a diamond right of a square"]) == (
        '{"tag": "position", "include": [{"class": "square", "count": 1}, '
        '{"class": "diamond", "count": 1, "position": ["right of", 0]}], '
        '"prompt": "a photo of a diamond right of a square"}')
    assert json.dumps(ex["a photo of an orange circle and a white square"]) == (
        '{"tag": "color_attr", "include": [{"class": "circle", "count": 1, "color": "orange"}, '
        '{"class": "square", "count": 1, "color": "white"}], '
        '"prompt": "a photo of an orange circle and a white square"}')
    assert "a photo of an orange diamond" in ex and "a photo of two circles" in ex
    assert "a photo of a square and a triangle" in ex and "a photo of a triangle and a square" in ex
    # color_attr colors are distinct, as in GenEval
    assert "a photo of a red circle and a red square" not in ex


def test_schema_and_key_order_valid_for_geneval() -> None:
    for t in TAGS:
        for m in all_prompts(t):
            validate_metadata(m, classes=SHAPES)
            keys = list(m)
            assert keys == (["tag", "include", "exclude", "prompt"] if t == "counting"
                            else ["tag", "include", "prompt"])
            for c in m["include"]:
                assert list(c)[:2] == ["class", "count"]


def _rebuild(md: dict) -> dict:
    """Rebuild an official metadata line with make_metadata from its own fields."""
    tag, inc = md["tag"], md["include"]
    if tag == "position":
        return make_metadata(tag, [inc[1]["class"], inc[0]["class"]], relation=inc[1]["position"][0])
    if tag == "counting":
        return make_metadata(tag, [inc[0]["class"]], count=inc[0]["count"])
    return make_metadata(tag, [c["class"] for c in inc], [c["color"] for c in inc if "color" in c])


def test_templates_reproduce_official_geneval_lines(reference) -> None:
    path = reference / "geneval" / "evaluation_metadata.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    assert len(lines) == 553
    for ln in lines:
        assert json.dumps(_rebuild(json.loads(ln))) == ln


def test_parse_prompt_round_trip_every_prompt() -> None:
    for t in TAGS:
        for m in all_prompts(t):
            assert parse_prompt(m["prompt"]) == m
    assert parse_prompt("  A photo of   a Red circle ")["include"] == [
        {"class": "circle", "count": 1, "color": "red"}]
    # returned dicts are copies
    parse_prompt("a photo of a circle")["include"].clear()
    assert parse_prompt("a photo of a circle")["include"]


def test_parse_prompt_errors() -> None:
    with pytest.raises(UnknownWordsError, match="teal, hexagon") as e:
        parse_prompt("a photo of a teal hexagon and a hexagon teal")
    assert e.value.words == ("teal", "hexagon")
    assert isinstance(e.value, ValueError)
    with pytest.raises(UnknownWordsError, match="five"):
        parse_prompt("a photo of five circles")
    with pytest.raises(ValueError, match="matches no shapes-world GenEval template") as e2:
        parse_prompt("a photo of a circle and a circle")  # same class twice: never generated
    assert not isinstance(e2.value, UnknownWordsError)
    with pytest.raises(ValueError, match="matches no"):
        parse_prompt("circle a photo of a")
    with pytest.raises(ValueError, match="matches no"):
        parse_prompt("a photo of a red circle and a red square")


def test_prompt_words_exact() -> None:
    expected = {"a", "an", "photo", "of", "and", "left", "right", "above", "below", "two", "three", "four",
                "circle", "square", "triangle", "diamond", "circles", "squares", "triangles", "diamonds",
                "cross", "crosses", "ring", "rings", "frame", "frames", "hourglass", "hourglasses", "funnel",
                "funnels", "bowtie", "bowties",
                "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"}
    assert set(PROMPT_WORDS) == expected and len(PROMPT_WORDS) == len(expected)


def test_splits_are_disjoint_as_texts_for_every_tag() -> None:
    sp = build_splits(0)
    assert set(sp) == {"train", "val", "test"}
    assert SPLIT_KIND == dict.fromkeys(TAGS, "disjoint")
    # val/test texts per tag: ceil(0.2 n), at most DEFAULT_PER_TAG (worked out by hand from EXPECTED_COUNTS)
    k_expected = {"single_object": 2, "two_object": 18, "counting": 6, "colors": 20, "position": 72,
                  "color_attr": 132}
    for tag in TAGS:
        n, k = EXPECTED_COUNTS[tag], k_expected[tag]
        assert eval_text_count(tag) == k
        texts = {s: [m["prompt"] for m in sp[s] if m["tag"] == tag] for s in sp}
        assert len(texts["val"]) == len(texts["test"]) == DEFAULT_PER_TAG
        tr, va, te = (set(texts[s]) for s in ("train", "val", "test"))
        assert not (tr & va) and not (tr & te) and not (va & te)
        assert len(va) == len(te) == k
        assert len(tr) == len(texts["train"]) == n - 2 * k  # every train text once
        assert tr | va | te == {m["prompt"] for m in all_prompts(tag)}
        for s in ("val", "test"):
            counts = Counter(texts[s])
            assert max(counts.values()) - min(counts.values()) <= 1  # evenly covered
    assert split_overlap(sp["train"], sp["val"] + sp["test"]) == []
    assert split_overlap(sp["val"], sp["test"]) == []
    # every entry is a valid, parseable metadata dict
    for s in sp:
        for m in sp[s]:
            assert parse_prompt(m["prompt"]) == m


def test_split_overlap_names_shared_texts_after_normalising() -> None:
    a = [{"prompt": "a photo of a circle"}, {"prompt": "a photo of a ring"}]
    b = [{"prompt": "A photo of  a Ring"}, {"prompt": "a photo of a frame"}, {"prompt": "a photo of a ring"}]
    assert split_overlap(a, b) == ["a photo of a ring"]
    assert split_overlap(a, []) == []


def test_splits_deterministic_and_seeded() -> None:
    a, b, c = build_splits(0), build_splits(0), build_splits(1)
    assert a == b
    assert a["test"] != c["test"]
    small = build_splits(3, per_tag=5)
    assert len(small["val"]) == len(small["test"]) == 5 * len(TAGS)
    # a small per_tag caps the distinct texts too: 5 entries hold at most 5 texts
    assert len({m["prompt"] for m in small["test"] if m["tag"] == "color_attr"}) == 5
    with pytest.raises(ValueError, match="positive"):
        build_splits(0, per_tag=0)


def _simulated_half_width(per_tag: int, reps: int = 32, n_boot: int = 1000, seed: int = 0) -> float:
    """Mean bootstrap 95% CI half-width of the overall GenEval score for a Beta(1,1) policy.

    Per entry: success prob p ~ Beta(1, 1), 4 images ~ Binomial(4, p). Overall = unweighted mean of the 6
    tag means. Bootstrap resamples entries within each tag (percentile interval).
    """
    rng = np.random.default_rng(seed)
    widths = []
    for _ in range(reps):
        p = rng.beta(1.0, 1.0, size=(len(TAGS), per_tag))
        scores = rng.binomial(4, p) / 4.0
        idx = rng.integers(0, per_tag, size=(n_boot, len(TAGS), per_tag))
        boot = np.take_along_axis(scores[None], idx, axis=2).mean(axis=2).mean(axis=1)
        lo, hi = np.quantile(boot, [0.025, 0.975])
        widths.append((hi - lo) / 2)
    return float(np.mean(widths))


def test_per_tag_gives_ci_half_width_under_0_025() -> None:
    hw = _simulated_half_width(DEFAULT_PER_TAG)
    assert hw <= 0.025, hw
    # near-minimal: one even-coverage step (12 entries) fewer no longer meets the target
    assert _simulated_half_width(DEFAULT_PER_TAG - 12) > 0.025


def test_seen_split_holds_only_rl_training_texts() -> None:
    sp = build_splits(0)
    seen = seen_split(0)
    train_texts = {m["prompt"] for m in sp["train"]}
    assert len(seen) == SEEN_PER_TAG * len(TAGS)
    assert {m["prompt"] for m in seen} <= train_texts
    assert split_overlap(seen, sp["val"] + sp["test"]) == []
    for tag in TAGS:
        texts = [m["prompt"] for m in seen if m["tag"] == tag]
        n_train = sum(m["tag"] == tag for m in sp["train"])
        assert len(texts) == SEEN_PER_TAG
        assert len(set(texts)) == min(n_train, SEEN_PER_TAG)  # distinct where the tag has enough texts
    assert seen == seen_split(0) and seen != seen_split(1)
