"""Tests for ``irisbench.scorers.compbench_scorer.CompBenchScorer`` ("compbench-real").

Two kinds of perception are injected: the tiny random BLIP / OWLv2 / open_clip models of tests/perception_tiny.py
(every category's score must equal the official rule applied by hand to those models' raw outputs), and
scripted fakes whose outputs are chosen so that the expected numbers can be worked out on paper.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from perception_tiny import (  # noqa: E402
    TINY_CLIP_NAME,
    build_tiny_blip_vqa,
    build_tiny_owlv2,
    register_tiny_open_clip,
)

from irisbench.protocols import compbench as cb  # noqa: E402
from irisbench.scorers import compbench_real  # noqa: E402
from irisbench.scorers.compbench_real import BlipVQA, BoxDetection, ClipCosine, OpenVocabDetector  # noqa: E402
from irisbench.scorers.compbench_scorer import (  # noqa: E402
    CompBenchScorer,
    UnsupportedCategoryError,
    to_unidet_frame,
    unidet_frame_size,
)
from irisbench.scorers.geneval_real import PerceptionError  # noqa: E402

THRESHOLD = 0.1


def item(tag: str, prompt: str, kind: str | None = None) -> dict:
    out = {"tag": tag, "prompt": prompt, "rule_prompt": prompt}
    if kind is not None:
        out["complex_kind"] = kind
    return out


ITEMS = [
    item("color", "a red cube and a blue ball"),
    item("shape", "a round bird and a square car"),
    item("texture", "a metallic cube and a wooden ball"),
    item("spatial", "a bird on the left of a car"),
    item("numeracy", "two birds and a car"),
    item("non_spatial", "a bird is watching a car"),
    item("complex", "a red bird next to a blue car", "spatial"),
    item("complex", "the green bird sits on the blue car", "action"),
    item("complex", "a red bird next to a blue car and a green cube", "other"),
]
SIZES = [(40, 56), (48, 32), (32, 32)]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (*SIZES[i % 3], 3), dtype=np.uint8) for i in range(len(ITEMS))]


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory):
    return build_tiny_blip_vqa(tmp_path_factory.mktemp("blip"))


@pytest.fixture(scope="module")
def blip(blip_dir):
    return BlipVQA(blip_dir, device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def owl(tmp_path_factory):
    return OpenVocabDetector(build_tiny_owlv2(tmp_path_factory.mktemp("owl")), device="cpu", threshold=0.9)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    weights = register_tiny_open_clip(tmp_path_factory.mktemp("clip"))
    return ClipCosine.from_open_clip(TINY_CLIP_NAME, str(weights), device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def tiny_scorer(blip, owl, clip):
    return CompBenchScorer(blip_vqa=blip, open_vocab=owl, clip_cosine=clip, detector_threshold=THRESHOLD)


# --------------------------------------------------------------------------------------------- box frame


@pytest.mark.parametrize("hw", [(384, 384), (48, 64), (64, 48), (100, 300), (479, 480), (1024, 768), (7, 5)])
def test_unidet_frame_matches_the_official_torchvision_resize(hw):
    pytest.importorskip("torchvision")
    from PIL import Image
    from torchvision import transforms

    h, w = hw
    resized = transforms.Resize(size=479, max_size=480)(Image.new("RGB", (w, h)))
    assert unidet_frame_size(h, w) == (resized.height, resized.width)


def test_to_unidet_frame_scales_each_axis():
    # 48x64 -> 360x480: both axes x7.5; 100x300 -> 160x480: y x1.6, x x1.6.
    dets = [BoxDetection("cat", (8.0, 4.0, 16.0, 40.0), 0.5)]
    assert to_unidet_frame(dets, 48, 64) == [BoxDetection("cat", (60.0, 30.0, 120.0, 300.0), 0.5)]
    assert to_unidet_frame(dets, 100, 300)[0].box == pytest.approx((12.8, 6.4, 25.6, 64.0))
    assert unidet_frame_size(384, 384) == (479, 479)


# ------------------------------------------------------------------------- tiny models: rule by hand


def _frame_scale(image):
    from PIL import Image
    from torchvision import transforms

    h, w = image.shape[:2]
    resized = transforms.Resize(size=479, max_size=480)(Image.fromarray(image))
    return resized.width / w, resized.height / h


def _detect_by_hand(owl, image, queries):
    raw = owl.detect([image], [list(dict.fromkeys(queries))], threshold=THRESHOLD)[0]
    sx, sy = _frame_scale(image)
    scaled = [(d.label, (d.box[0] * sx, d.box[1] * sy, d.box[2] * sx, d.box[3] * sy), d.score) for d in raw]
    return raw, scaled


def _expected(it, image, blip, owl, clip):
    """(score, components or None, raw detections) from the perception's raw outputs and the rules."""
    prompt, tag = it["rule_prompt"], it["tag"]

    def attribute():
        questions = cb.vqa_questions(prompt)
        pairs = blip.yes_no_prob([image] * len(questions), questions)
        return cb.blip_vqa_image_score([cb.vqa_phrase_score(y, n) for y, n in pairs])

    if tag in ("color", "shape", "texture"):
        return attribute(), None, []
    if tag == "spatial":
        raw, scaled = _detect_by_hand(owl, image, cb.spatial_objects(prompt))
        return cb.unidet_2d_score(prompt, scaled, score_threshold=THRESHOLD), None, raw
    if tag == "numeracy":
        targets = cb.numeracy_targets(prompt)
        raw, scaled = _detect_by_hand(owl, image, [name for name, _ in targets])
        return cb.numeracy_score(targets, scaled, score_threshold=THRESHOLD), None, raw
    if tag == "non_spatial":
        return clip.cosine([image], [prompt])[0], None, []
    objects = cb.spatial_objects(prompt, complex=True)
    raw, spatial = [], 0.0
    if objects is not None:
        raw, scaled = _detect_by_hand(owl, image, objects)
        spatial = cb.unidet_2d_score(prompt, scaled, complex=True, score_threshold=THRESHOLD)
    attr = attribute()
    cos = clip.cosine([image], [cb.clip_text(prompt, complex=True)])[0]
    score = {"spatial": (spatial + attr) / 2, "action": (cos + attr) / 2,
             "other": (attr + spatial + cos) / 3}[it["complex_kind"]]
    return score, {"attribute": attr, "spatial": spatial, "clip": cos}, raw


def test_every_category_equals_the_rule_on_raw_perception(tiny_scorer, images, blip, owl, clip):
    results = tiny_scorer.score(images, ITEMS)
    assert len(results) == len(ITEMS)
    seen_nonzero = set()
    for it, image, res in zip(ITEMS, images, results, strict=True):
        score, components, raw = _expected(it, image, blip, owl, clip)
        tol = 1e-4 if it["tag"] in ("color", "shape", "texture", "complex") else 1e-6  # BLIP: 4-decimal rounding
        assert res["score"] == pytest.approx(score, abs=tol), (it, res)
        assert isinstance(res["score"], float) and isinstance(res["reason"], str) and res["reason"]
        assert res["detections"] == [{"label": d.label, "box": pytest.approx(list(d.box), abs=1e-5),
                                      "score": pytest.approx(d.score, abs=1e-6)} for d in raw]
        if components is None:
            assert not {"attribute", "spatial", "clip"} & set(res)
        else:
            for key, value in components.items():
                assert res[key] == pytest.approx(value, abs=1e-4), (it, key)
        json.dumps(res)
        if res["score"] != 0:
            seen_nonzero.add(it["tag"])
    # The tiny models give non-trivial numbers for most categories (so the comparison above can fail).
    assert {"color", "shape", "texture", "numeracy", "non_spatial", "complex"} <= seen_nonzero


def test_batched_call_equals_one_by_one(tiny_scorer, images):
    together = tiny_scorer.score(images, ITEMS)
    for i, (image, it) in enumerate(zip(images, ITEMS, strict=True)):
        alone = tiny_scorer.score([image], [it])[0]
        assert alone["score"] == pytest.approx(together[i]["score"], abs=1e-4), it
        assert len(alone["detections"]) == len(together[i]["detections"])
    reordered = tiny_scorer.score(images[::-1], ITEMS[::-1])[::-1]
    assert [r["score"] for r in reordered] == pytest.approx([r["score"] for r in together], abs=1e-4)


def test_nan_from_a_real_model_is_an_error(blip_dir, images):
    broken = BlipVQA(blip_dir, device="cpu")
    with torch.no_grad():
        broken.model.text_decoder.cls.predictions.bias.fill_(float("nan"))
    with pytest.raises(PerceptionError, match="NaN"):
        CompBenchScorer(blip_vqa=broken).score(images[:1], ITEMS[:1])


# --------------------------------------------------------------------------------- scripted perception


class FakeBlip:
    def __init__(self, answers=None, default=(0.6, 0.2)):
        self.answers, self.default, self.calls = answers or {}, default, []

    def yes_no_prob(self, images, questions):
        assert len(images) == len(questions)
        self.calls.append(list(questions))
        return [self.answers.get(q, self.default) for q in questions]


class FakeDetector:
    """Returns every scripted detection of the queried labels, unfiltered (the rules must apply the cut)."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def detect(self, images, queries, *, threshold=None):
        self.calls.append(([list(q) for q in queries], threshold))
        out = []
        for q in queries:
            dets = [BoxDetection(label, box, score) for label in q for box, score in self.table.get(label, [])]
            out.append(sorted(dets, key=lambda d: -d.score))
        return out


class FakeClip:
    def __init__(self, value=0.3):
        self.value, self.calls = value, []

    def cosine(self, images, texts):
        self.calls.append(list(texts))
        return [self.value] * len(texts)


def blank(n=1, size=100):
    return [np.zeros((size, size, 3), dtype=np.uint8) for _ in range(n)]


# bird and car 40 px apart on both axes in a 100-px image: 191.6 px in UniDet's 479-px frame (> 150).
NEXT_TO = {"bird": [((0.0, 0.0, 10.0, 10.0), 0.9)], "car": [((40.0, 40.0, 50.0, 50.0), 0.8)]}
NEXT_TO_SCORE = 0.25 * 0.9 + 0.25 * 0.8 + 0.5 * (150 / (40 * 4.79))  # 0.8164; unscaled boxes would give 0.925


def test_hand_computed_scores():
    blip = FakeBlip({"a red cube?": (0.3, 0.1), "a blue ball?": (0.2, 0.6)})
    numeracy = {"bird": [((0.0, 0.0, 10.0, 10.0), 0.9), ((20.0, 20.0, 30.0, 30.0), 0.05)],
                "car": [((50.0, 50.0, 60.0, 60.0), 0.3)]}
    detector = FakeDetector({**NEXT_TO})
    scorer = CompBenchScorer(blip_vqa=blip, open_vocab=detector, clip_cosine=FakeClip(0.27))
    color, spatial, non_spatial = scorer.score(blank(3), [item("color", "a red cube and a blue ball"),
                                                          item("spatial", "a bird next to a car"),
                                                          item("non_spatial", "a bird is watching a car")])
    assert color["score"] == pytest.approx(0.75 * 0.25) and color["detections"] == []
    assert spatial["score"] == pytest.approx(NEXT_TO_SCORE)
    assert [d["label"] for d in spatial["detections"]] == ["bird", "car"]
    assert spatial["detections"][1]["box"] == [40.0, 40.0, 50.0, 50.0]  # image pixels, not the UniDet frame
    assert non_spatial["score"] == pytest.approx(0.27)
    assert detector.calls == [([["bird", "car"]], THRESHOLD)]
    # Numeracy: the 0.05 bird is under the 0.1 cut (count 1 of 2 -> 0.25); the 0.3 car counts (0.5) -- the
    # rule must use the detector threshold, not UniDet's 0.5 (which would drop the car: 0.25).
    detector.table = numeracy
    (num,) = scorer.score(blank(1), [item("numeracy", "two birds and a car")])
    assert num["score"] == pytest.approx(0.75)
    assert detector.calls[-1] == ([["bird", "car"]], THRESHOLD)


@pytest.mark.parametrize("kind, expected", [
    ("spatial", (NEXT_TO_SCORE + 0.5625) / 2),
    ("action", (0.3 + 0.5625) / 2),
    ("other", (0.5625 + NEXT_TO_SCORE + 0.3) / 3),
])
def test_complex_three_in_one_by_kind(kind, expected):
    blip, clip = FakeBlip(), FakeClip(0.3)
    scorer = CompBenchScorer(blip_vqa=blip, open_vocab=FakeDetector(NEXT_TO), clip_cosine=clip)
    (res,) = scorer.score(blank(1), [item("complex", "a red bird next to a blue car", kind)])
    assert res["score"] == pytest.approx(expected)
    assert res["attribute"] == pytest.approx(0.5625)  # (0.6 / 0.8) ** 2 for "a red bird?", "a blue car?"
    assert res["spatial"] == pytest.approx(NEXT_TO_SCORE) and res["clip"] == pytest.approx(0.3)
    assert blip.calls == [["a red bird?", "a blue car?"]]
    assert clip.calls == [["a bird next to a car"]]  # complex CLIP text: ADJ tokens dropped


def test_all_questions_go_to_one_blip_call_and_one_detector_call():
    blip, detector, clip = FakeBlip(), FakeDetector(NEXT_TO), FakeClip()
    scorer = CompBenchScorer(blip_vqa=blip, open_vocab=detector, clip_cosine=clip)
    its = [item("color", "a red cube and a blue ball"), item("texture", "a metallic cube"),
           item("spatial", "a bird next to a car"), item("complex", "a red bird next to a blue car", "other"),
           item("non_spatial", "a bird is watching a car")]
    scorer.score(blank(len(its)), its)
    assert blip.calls == [["a red cube?", "a blue ball?", "a metallic cube?", "a red bird?", "a blue car?"]]
    assert len(detector.calls) == 1 and detector.calls[0][0] == [["bird", "car"], ["bird", "car"]]
    assert clip.calls == [["a bird next to a car", "a bird is watching a car"]]


def test_each_image_gets_its_own_answers_and_box_frame():
    class ImageBlip(FakeBlip):  # P(yes) = the image's grey level / 255
        def yes_no_prob(self, images, questions):
            return [(float(im.mean()) / 255, 1 - float(im.mean()) / 255) for im in images]

    class ImageClip(FakeClip):
        def cosine(self, images, texts):
            return [float(im.mean()) / 1000 for im in images]

    grey = [np.full((100, 100, 3), 51, np.uint8), np.full((400, 400, 3), 204, np.uint8)]
    scorer = CompBenchScorer(blip_vqa=ImageBlip(), open_vocab=FakeDetector(NEXT_TO), clip_cosine=ImageClip())
    its = [item("color", "a red cube"), item("color", "a red cube")]
    assert [r["score"] for r in scorer.score(grey, its)] == pytest.approx([0.2, 0.8])
    its = [item("non_spatial", "a cat"), item("non_spatial", "a cat")]
    assert [r["score"] for r in scorer.score(grey, its)] == pytest.approx([0.051, 0.204])
    # 40 px apart: 191.6 px in the frame of the 100-px image (> 150), 47.9 px in that of the 400-px one.
    its = [item("spatial", "a bird next to a car"), item("spatial", "a bird next to a car")]
    assert [r["score"] for r in scorer.score(grey, its)] == pytest.approx([NEXT_TO_SCORE, 0.925])


def test_spatial_without_an_object_pair_scores_zero_without_detecting():
    detector = FakeDetector(NEXT_TO)
    scorer = CompBenchScorer(open_vocab=detector)
    (res,) = scorer.score(blank(1), [item("spatial", "red and blue")])
    assert res["score"] == 0.0 and "no object pair" in res["reason"] and res["detections"] == []
    assert detector.calls == []


class Counter:
    def __init__(self, make):
        self.make, self.count = make, 0

    def __call__(self):
        self.count += 1
        return self.make()


def test_models_load_lazily_once_and_only_when_needed():
    blip, detector, clip = Counter(FakeBlip), Counter(lambda: FakeDetector(NEXT_TO)), Counter(FakeClip)
    scorer = CompBenchScorer(blip_vqa=blip, open_vocab=detector, clip_cosine=clip)
    assert (blip.count, detector.count, clip.count) == (0, 0, 0)
    scorer.score(blank(2), [item("color", "a red cube"), item("shape", "a round ball")])
    assert (blip.count, detector.count, clip.count) == (1, 0, 0)
    scorer.score(blank(1), [item("texture", "a wooden ball")])
    assert (blip.count, detector.count, clip.count) == (1, 0, 0)
    scorer.score(blank(1), [item("spatial", "a bird next to a car")])
    assert (blip.count, detector.count, clip.count) == (1, 1, 0)
    scorer.score(blank(2), [item("non_spatial", "a bird is watching a car"),
                            item("complex", "a red bird next to a blue car", "action")])
    assert (blip.count, detector.count, clip.count) == (1, 1, 1)


def test_default_loaders_get_the_configured_models(monkeypatch):
    made = []

    class Blip(FakeBlip):
        def __init__(self, *args, **kwargs):
            super().__init__()
            made.append(("blip", args, kwargs))

    class Owl(FakeDetector):
        def __init__(self, *args, **kwargs):
            super().__init__(NEXT_TO)
            made.append(("owl", args, kwargs))

    class Clip(FakeClip):
        @classmethod
        def from_open_clip(cls, *args, **kwargs):
            made.append(("clip", args, kwargs))
            return cls()

    monkeypatch.setattr(compbench_real, "BlipVQA", Blip)
    monkeypatch.setattr(compbench_real, "OpenVocabDetector", Owl)
    monkeypatch.setattr(compbench_real, "ClipCosine", Clip)
    scorer = CompBenchScorer("blip-x", "owl-y", "clip-z", "weights-w", "cpu", detector_threshold=0.3)
    assert made == []
    scorer.score(blank(1), [item("color", "a red cube")])
    assert made == [("blip", ("blip-x",), {"device": "cpu"})]
    scorer.score(blank(2), [item("numeracy", "two birds and a car"), item("non_spatial", "a car")])
    assert made[1:] == [("owl", ("owl-y",), {"device": "cpu", "threshold": 0.3}),
                        ("clip", ("clip-z", "weights-w"), {"device": "cpu"})]


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("where", ["blip", "detector", "clip"])
def test_nan_from_any_model_is_an_error(where):
    blip = FakeBlip(default=(math.nan, 0.2)) if where == "blip" else FakeBlip()
    detector = FakeDetector({"bird": [((0.0, 0.0, 1.0, 1.0), math.nan if where == "detector" else 0.9)]})
    clip = FakeClip(math.nan if where == "clip" else 0.3)
    scorer = CompBenchScorer(blip_vqa=blip, open_vocab=detector, clip_cosine=clip)
    with pytest.raises(PerceptionError, match="refusing"):
        scorer.score(blank(1), [item("complex", "a red bird next to a blue car", "other")])


def test_3d_spatial_is_a_clear_error_before_any_model_loads():
    blip = Counter(FakeBlip)
    scorer = CompBenchScorer(blip_vqa=blip)
    with pytest.raises(UnsupportedCategoryError, match="'3d_spatial'.*depth") as err:
        scorer.score(blank(2), [item("color", "a red cube"), item("3d_spatial", "a chair hidden by a mouse")])
    assert isinstance(err.value, ValueError) and "item 1" in str(err.value)
    assert blip.count == 0


def test_bad_items_are_rejected_before_any_model_loads():
    blip, detector = Counter(FakeBlip), Counter(lambda: FakeDetector({}))
    scorer = CompBenchScorer(blip_vqa=blip, open_vocab=detector, clip_cosine=FakeClip())
    with pytest.raises(ValueError, match="2 images but 1 items"):
        scorer.score(blank(2), [item("color", "a red cube")])
    with pytest.raises(ValueError, match="item 0: field 'tag'.*'colour'"):
        scorer.score(blank(1), [item("colour", "a red cube")])
    with pytest.raises(ValueError, match="item 1: complex items need field 'complex_kind'"):
        scorer.score(blank(2), [item("color", "a red cube"), item("complex", "a red bird next to a car")])
    with pytest.raises(cb.PromptParseError, match="item 0 \\(numeracy\\)"):
        scorer.score(blank(1), [item("numeracy", "some birds")])
    with pytest.raises(ValueError, match="rule_prompt"):
        scorer.score(blank(1), [{"tag": "color"}])
    with pytest.raises(PerceptionError, match="image 0"):
        scorer.score([np.zeros((8, 8, 3), dtype=np.float32)], [item("color", "a red cube")])
    assert (blip.count, detector.count) == (0, 0)
    with pytest.raises(ValueError, match="detector_threshold"):
        CompBenchScorer(detector_threshold=1.5)
    with pytest.raises(TypeError, match="clip_cosine"):
        CompBenchScorer(clip_cosine=42)


def test_describe_names_models_rules_and_substitutions():
    scorer = CompBenchScorer(detector_threshold=0.2)
    info = scorer.describe()
    json.dumps(info)
    assert info["name"] == "compbench-real"
    assert info["blip"]["model"] == "Salesforce/blip-vqa-capfilt-large"
    assert info["detector"] == {"model": "google/owlv2-base-patch16-ensemble", "injected": False,
                                "loaded": "not loaded yet", "threshold": 0.2}
    assert "ViT-B-32" in info["clip"]["model"]
    assert info["rules"]["spatial"] == "unidet_2d" and info["rules"]["complex"] == "three_in_one"
    assert "3d_spatial" not in info["rules"] and "3d_spatial" in info["unsupported"]
    text = " ".join(info["substitutions"])
    assert "OWLv2 replaces UniDet" in text and "transformers" in text


def test_importing_and_constructing_loads_no_heavy_library():
    code = ("import sys; from irisbench.scorers.compbench_scorer import CompBenchScorer; "
            "s = CompBenchScorer(); s.describe(); "
            "print(sorted(m for m in ('torch', 'transformers', 'open_clip') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
