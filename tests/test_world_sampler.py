"""Shapes-world scene sampler: every scene satisfies its metadata under GenEval's rules."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from irisbench.protocols.geneval import judge, relation
from irisbench.world.detector import detect
from irisbench.world.prompts import all_prompts
from irisbench.world.sampler import (
    REL_MARGIN,
    SamplerError,
    random_scene,
    relation_holds,
    relation_offsets,
    satisfies,
    scene_for,
)
from irisbench.world.scene import render
from irisbench.world.vocab import RELATIONS, SHAPES, SIZES, TAGS


def _metadata_sample(rng: np.random.Generator, per_tag: int = 60) -> list[dict]:
    out = []
    for t in TAGS:
        ps = all_prompts(t)
        out += [ps[i] for i in rng.choice(len(ps), size=per_tag, replace=len(ps) < per_tag)]
    return out


def test_scene_for_satisfies_metadata_via_detect_and_judge() -> None:
    rng = np.random.default_rng(0)
    for md in _metadata_sample(rng):
        scene = scene_for(md, rng)
        assert satisfies(md, scene)
        v = judge(md, detect(render(scene)))
        assert v.correct, (md["prompt"], scene, v.reason)


def test_scene_for_structure_per_tag() -> None:
    rng = np.random.default_rng(1)
    extra = Counter()
    for md in _metadata_sample(rng, per_tag=80):
        scene = scene_for(md, rng)
        shapes = Counter(o.shape for o in scene.objects)
        named = {c["class"] for c in md["include"]}
        n_named = sum(c["count"] for c in md["include"])
        assert len(scene.objects) in (n_named, n_named + 1)  # at most one distractor
        extra[md["tag"]] += len(scene.objects) - n_named
        for c in md["include"]:
            assert shapes[c["class"]] == c["count"]  # exactly the asked instances, no duplicates
            if "color" in c:
                assert all(o.color == c["color"] for o in scene.objects if o.shape == c["class"])
        distractors = [o for o in scene.objects if o.shape not in named]
        assert len(distractors) == len(scene.objects) - n_named
        if md["tag"] == "position":
            (target,) = [o for o in scene.objects if o.shape == md["include"][0]["class"]]
            (obj,) = [o for o in scene.objects if o.shape == md["include"][1]["class"]]
            rel = md["include"][1]["position"][0]
            assert relation_holds(rel, obj.box, target.box, cut=0.5 + REL_MARGIN)
    for t in TAGS:  # distractors appear sometimes, but scenes stay mostly clean
        assert 0 < extra[t] < 0.5 * 80, (t, extra[t])


def test_scene_for_randomises_background_size_position() -> None:
    rng = np.random.default_rng(2)
    md = all_prompts("single_object")[0]
    scenes = [scene_for(md, rng) for _ in range(200)]
    objs = [o for s in scenes for o in s.objects if o.shape == "circle"]
    assert {s.background for s in scenes} == {0, 1, 2}
    assert {o.size for o in objs} == set(SIZES)
    assert len({(o.x, o.y) for o in objs}) > 20
    assert len({o.color for o in objs}) == 10


def test_scene_for_deterministic_for_rng() -> None:
    md = all_prompts("color_attr")[123]
    a = [scene_for(md, np.random.default_rng(5)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


def test_scene_for_rejects_bad_metadata() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(SamplerError, match="class 'dog'"):
        scene_for({"tag": "single_object", "include": [{"class": "dog", "count": 1}], "prompt": "x"}, rng)
    with pytest.raises(SamplerError, match="color 'teal'"):
        scene_for({"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "teal"}]}, rng)
    with pytest.raises(SamplerError, match="bad position"):
        scene_for({"tag": "position", "include": [{"class": "circle", "count": 1, "position": ["near", 0]}]},
                  rng)
    with pytest.raises(SamplerError, match="no valid scene"):  # 30 big squares cannot fit
        scene_for({"tag": "counting", "include": [{"class": "square", "count": 30}]}, rng)


def test_relation_matches_geneval_relation() -> None:
    rng = np.random.default_rng(3)
    for _ in range(2000):
        a = rng.integers(0, 24, 2)
        b = rng.integers(0, 24, 2)
        sa, sb = rng.choice(SIZES, 2)
        box_a = (a[0], a[1], a[0] + sa, a[1] + sa)
        box_b = (b[0], b[1], b[0] + sb, b[1] + sb)
        expect = relation(box_a, box_b)
        assert {r for r in RELATIONS if relation_holds(r, box_a, box_b)} == expect
    assert relation_offsets((0, 0, 8, 8), (0, 0, 8, 8)) is None
    dx, dy = relation_offsets((0, 0, 8, 8), (16, 0, 24, 8))  # o = (-16, 0), margin 1.6
    assert dx == pytest.approx(-14.4 / 16) and dy == 0.0


def test_satisfies_agrees_with_judge_on_random_scenes() -> None:
    """The sampler's scene-level check never accepts what GenEval's judge rejects, and equals the judge
    on scenes without repeated shapes (where GenEval's "top instance" is unambiguous)."""
    rng = np.random.default_rng(4)
    by_tag = {t: all_prompts(t) for t in TAGS}
    n_acc = n_cmp = 0
    for i in range(3000):
        scene = random_scene(rng)
        ps = by_tag[TAGS[i % len(TAGS)]]
        md = ps[int(rng.integers(len(ps)))]
        ok = judge(md, detect(render(scene))).correct
        if satisfies(md, scene):
            n_acc += 1
            assert ok, (md["prompt"], scene)
        if len({o.shape for o in scene.objects}) == len(scene.objects):
            n_cmp += 1
            assert satisfies(md, scene) == ok, (md["prompt"], scene)
    assert n_acc > 100 and n_cmp > 1000


def test_random_scene() -> None:
    rng = np.random.default_rng(6)
    scenes = [random_scene(rng) for _ in range(300)]
    assert Counter(len(s.objects) for s in scenes).keys() == {1, 2, 3, 4}
    assert {o.shape for s in scenes for o in s.objects} == set(SHAPES)
