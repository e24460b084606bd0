"""Shapes-world scenes: masks, rendering, validation, serialisation, and the plan text."""

from __future__ import annotations

import json

import numpy as np
import pytest

from irisbench.world.plan import PLAN_WORDS, plan_text
from irisbench.world.sampler import random_scene
from irisbench.world.scene import Obj, Scene, SceneError, render, render_batch, shape_mask
from irisbench.world.vocab import BACKGROUNDS, CANVAS, PALETTE, SHAPES, SIZES


def _grid(rows: str) -> np.ndarray:
    return np.array([[c == "#" for c in r] for r in rows.split()], dtype=bool)


# Hand-drawn size-8 masks (pixel-centre tests: circle r=4, diamond |dx|+|dy|<=4, triangle apex up, funnel
# apex down, cross arms |d|<=4/3, ring 2<r<=4, frame max(|dx|,|dy|)>2, hourglass |dy|>=|dx|, bowtie |dx|>=|dy|).
EXPECTED_8 = {
    "funnel": "######## ######## .######. .######. ..####.. ..####.. ...##... ...##...",
    "cross": "...##... ...##... ...##... ######## ######## ...##... ...##... ...##...",
    "ring": "..####.. .######. ###..### ##....## ##....## ###..### .######. ..####..",
    "frame": "######## ######## ##....## ##....## ##....## ##....## ######## ########",
    "hourglass": "######## .######. ..####.. ...##... ...##... ..####.. .######. ########",
    "bowtie": "#......# ##....## ###..### ######## ######## ###..### ##....## #......#",
    "circle": "..####.. .######. ######## ######## ######## ######## .######. ..####..",
    "square": " ".join(["########"] * 8),
    "triangle": "...##... ...##... ..####.. ..####.. .######. .######. ######## ########",
    "diamond": "...##... ..####.. .######. ######## ######## .######. ..####.. ...##...",
}


@pytest.mark.parametrize("shape", SHAPES)
def test_size8_masks_match_hand_drawing(shape: str) -> None:
    m = shape_mask(shape, 8)
    assert m.dtype == bool and m.shape == (8, 8)
    np.testing.assert_array_equal(m, _grid(EXPECTED_8[shape]))


@pytest.mark.parametrize("size", [*SIZES, 5, 9, 13])
def test_masks_touch_all_sides_are_symmetric_and_distinct(size: int) -> None:
    masks = {s: shape_mask(s, size) for s in SHAPES}
    for s, m in masks.items():
        assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any(), s
        np.testing.assert_array_equal(m, m[:, ::-1])  # left-right symmetric
        if s not in ("triangle", "funnel"):
            np.testing.assert_array_equal(m, m[::-1])
    assert masks["triangle"][0].sum() < masks["triangle"][-1].sum()  # apex up
    if size in SIZES:  # the funnel is the triangle upside down, the bowtie the hourglass on its side
        np.testing.assert_array_equal(masks["funnel"], masks["triangle"][::-1])
        np.testing.assert_array_equal(masks["bowtie"], masks["hourglass"].T)
    for a in SHAPES:
        for b in SHAPES:
            if a < b and size in SIZES:
                iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
                assert iou < 0.85, (a, b, iou)


def test_mask_is_cached_and_read_only() -> None:
    assert shape_mask("circle", 12) is shape_mask("circle", 12)
    with pytest.raises(ValueError):
        shape_mask("circle", 12)[0, 0] = True
    with pytest.raises(SceneError, match="unknown shape"):
        shape_mask("hexagon", 8)


def test_render_exact_pixels() -> None:
    scene = Scene((Obj("square", "red", 0, 0, 8), Obj("triangle", "blue", 20, 16, 12)), background=2)
    img = render(scene)
    assert img.dtype == np.uint8 and img.shape == (CANVAS, CANVAS, 3)
    assert (img[0:8, 0:8] == PALETTE["red"]).all()
    tri = shape_mask("triangle", 12)
    patch = img[16:28, 20:32]
    assert (patch[tri] == PALETTE["blue"]).all() and (patch[~tri] == BACKGROUNDS[2]).all()
    rest = np.ones((CANVAS, CANVAS), dtype=bool)
    rest[0:8, 0:8] = False
    rest[16:28, 20:32] = False
    assert (img[rest] == BACKGROUNDS[2]).all()
    # only palette colors and the background appear
    colors = {tuple(int(v) for v in c) for c in img.reshape(-1, 3)}
    assert colors == {PALETTE["red"], PALETTE["blue"], BACKGROUNDS[2]}


def test_render_batch_matches_render() -> None:
    rng = np.random.default_rng(0)
    scenes = [random_scene(rng) for _ in range(20)]
    batch = render_batch(scenes)
    assert batch.shape == (20, CANVAS, CANVAS, 3)
    for s, im in zip(scenes, batch, strict=True):
        np.testing.assert_array_equal(im, render(s))


def test_box_and_validation() -> None:
    assert Obj("circle", "red", 4, 8, 12).box == (4, 8, 16, 20)
    with pytest.raises(SceneError, match="shape"):
        Obj("star", "red", 0, 0, 8)
    with pytest.raises(SceneError, match="color"):
        Obj("circle", "teal", 0, 0, 8)
    with pytest.raises(SceneError, match="size"):
        Obj("circle", "red", 0, 0, 10)
    with pytest.raises(SceneError, match="x=2"):
        Obj("circle", "red", 2, 0, 8)
    with pytest.raises(SceneError, match="y=24"):
        Obj("circle", "red", 0, 24, 12)  # would leave the canvas
    with pytest.raises(SceneError, match="background"):
        Scene((), background=3)
    # 4 px apart along x: fine; 0 px (touching): rejected; diagonal neighbours 4 px apart: fine
    Scene((Obj("circle", "red", 0, 0, 8), Obj("square", "red", 12, 0, 8)), 0)
    Scene((Obj("circle", "red", 0, 0, 8), Obj("square", "red", 12, 12, 8)), 0)
    with pytest.raises(SceneError, match="closer"):
        Scene((Obj("circle", "red", 0, 0, 8), Obj("square", "red", 8, 0, 8)), 0)
    with pytest.raises(SceneError, match="closer"):
        Scene((Obj("circle", "red", 0, 0, 12), Obj("square", "red", 8, 8, 8)), 0)


def test_dict_round_trip_and_errors() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        s = random_scene(rng)
        d = json.loads(json.dumps(s.to_dict()))
        assert Scene.from_dict(d) == s
    with pytest.raises(SceneError, match="objects"):
        Scene.from_dict({"background": 0})
    with pytest.raises(SceneError, match=r"objects\[0\] lacks field\(s\) \['size'\]"):
        Scene.from_dict({"background": 0, "objects": [{"shape": "circle", "color": "red", "x": 0, "y": 0}]})
    with pytest.raises(SceneError, match=r"objects\[0\].*color"):
        Scene.from_dict({"background": 0, "objects": [
            {"shape": "circle", "color": "cyan", "x": 0, "y": 0, "size": 8}]})


def test_plan_text() -> None:
    scene = Scene((Obj("square", "blue", 24, 24, 8), Obj("circle", "red", 0, 0, 12),
                   Obj("diamond", "white", 16, 12, 8)), background=0)
    assert plan_text(scene) == ("big red circle top left ; small white diamond middle center ; "
                                "small blue square bottom right")
    # same row third: left-to-right even if the right one is slightly higher
    scene = Scene((Obj("triangle", "yellow", 12, 8, 8), Obj("diamond", "brown", 0, 12, 8)), background=2)
    assert plan_text(scene) == "small brown diamond middle left ; small yellow triangle middle center"
    assert plan_text(Scene((), 0)) == ""


def test_plan_words_cover_random_plans() -> None:
    rng = np.random.default_rng(2)
    seen: set[str] = set()
    for _ in range(300):
        s = random_scene(rng)
        words = plan_text(s).split()
        assert len(words) == 5 * len(s.objects) + len(s.objects) - 1
        seen.update(words)
    assert seen == set(PLAN_WORDS)  # nothing outside PLAN_WORDS, and every plan word is reachable
