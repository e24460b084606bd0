"""Tests for ``irisbench.scorers.geneval_real`` on tiny random models built offline (tests/perception_tiny.py).

The Mask2Former post-processing is checked against hand-computed values and against a slow per-pair reference
loop on the same raw outputs; the CLIP color classifier against hand-made images with an injected fake
embedder whose answer is known; the scorer against the judge with injected perception.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from perception_tiny import (  # noqa: E402
    TINY_CLIP_NAME,
    build_tiny_mask2former,
    coco_id2label,
    register_tiny_open_clip,
)

from irisbench.protocols.geneval import COCO_CLASSES, GENEVAL_COLORS, Detection, judge  # noqa: E402
from irisbench.scorers.geneval_real import (  # noqa: E402
    COLOR_TEMPLATES,
    ClipColorClassifier,
    ColorQuery,
    Mask2FormerDetector,
    Mask2FormerScorer,
    PerceptionError,
    RawSegmentation,
    geneval_label,
    instance_postprocess,
    masks_to_boxes,
    mmdet_resize_shape,
)

SMALL_SCALE = (96, 64)  # keeps the tiny detector's input small; the real default is mmdet's (1333, 800)


# ------------------------------------------------------------------------------------------- fixtures


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


@pytest.fixture(scope="module")
def m2f_dir(tmp_path_factory):
    return build_tiny_mask2former(tmp_path_factory.mktemp("m2f"))


@pytest.fixture(scope="module")
def detector(m2f_dir):
    return Mask2FormerDetector(m2f_dir, device="cpu", scale=SMALL_SCALE)


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory):
    return register_tiny_open_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def tiny_clip_classifier(clip_weights):
    return ClipColorClassifier.from_open_clip(TINY_CLIP_NAME, str(clip_weights), device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)]


# ------------------------------------------------------------------------------------- pure helpers


def test_mmdet_resize_shape_hand_values():
    assert mmdet_resize_shape(512, 512) == (800, 800)
    assert mmdet_resize_shape(480, 640) == (800, 1067)  # 640 * 5/3 = 1066.67 -> 1067
    assert mmdet_resize_shape(1024, 2048) == (667, 1333)  # long edge binds: 1024 * 1333/2048 = 666.5 -> 667
    assert mmdet_resize_shape(100, 50) == (1333, 667)
    assert mmdet_resize_shape(48, 64, SMALL_SCALE) == (64, 85)
    with pytest.raises(PerceptionError):
        mmdet_resize_shape(0, 10)


def test_geneval_label_renames_and_aliases():
    assert geneval_label("mouse") == "computer mouse"
    assert geneval_label("remote") == "tv remote"
    assert geneval_label("keyboard") == "computer keyboard"
    assert geneval_label("Dining_Table") == "dining table"
    assert geneval_label("sofa") == "couch"
    assert geneval_label("person") == "person"
    assert geneval_label("wall-brick") is None
    assert [geneval_label(n) for n in coco_id2label().values()] == list(COCO_CLASSES)


def test_masks_to_boxes_mmdet_convention():
    masks = torch.zeros((3, 6, 8), dtype=torch.bool)
    masks[1, 2, 3] = True  # single pixel at row 2, col 3
    masks[2, 1:4, 2:7] = True
    masks[2, 5, 0] = True  # a stray pixel widens the box
    boxes = masks_to_boxes(masks)
    assert boxes.dtype == torch.float32
    assert boxes.tolist() == [[0, 0, 0, 0], [3, 2, 4, 3], [0, 1, 7, 6]]


def test_instance_postprocess_hand_computed():
    # 2 queries, 3 classes + "no object"; output masks already at image size (identity upsampling).
    class_logits = torch.tensor([[2.0, 0.5, 0.0, 1.0], [0.0, 3.0, 0.0, 0.0]])
    mask_logits = torch.full((2, 6, 8), -4.0)
    mask_logits[0, 1:3, 2:5] = 4.0  # query 0: rows 1-2, cols 2-4; query 1: empty mask
    raw = RawSegmentation(class_logits, mask_logits, (6, 8), (6, 8), (6, 8))
    labels, scores, masks, boxes = instance_postprocess(raw, max_per_image=3)

    z0 = math.exp(2.0) + math.exp(0.5) + 1.0 + math.exp(1.0)
    z1 = math.exp(3.0) + 3.0
    sig = 1 / (1 + math.exp(-4.0))
    # top-3 class probabilities: (q1, c1), (q0, c0), (q0, c1); then scored by the mask.
    expected = sorted([(0, math.exp(2.0) / z0 * sig, 0), (1, math.exp(0.5) / z0 * sig, 0),
                       (1, math.exp(3.0) / z1 * 0.0, 1)], key=lambda t: -t[1])
    assert labels.tolist() == [e[0] for e in expected]
    assert scores.tolist() == pytest.approx([e[1] for e in expected], rel=1e-6)
    assert boxes.tolist() == [[2, 1, 5, 3], [2, 1, 5, 3], [0, 0, 0, 0]]
    assert masks.dtype == torch.bool and masks.shape == (3, 6, 8)
    assert int(masks[0].sum()) == 6 and int(masks[2].sum()) == 0


def _slow_reference(raw: RawSegmentation, max_per_image: int, names: list[str | None]):
    """mmdet's instance post-processing written as plain loops: upsample every query's mask (to the padded
    input, crop, to the original size), rank all (query, class) pairs by class probability, keep the top k,
    score = prob x mean sigmoid inside the binary mask, box from np.where."""
    import torch.nn.functional as F

    logits = F.interpolate(raw.mask_logits[None].float(), size=raw.padded_size, mode="bilinear",
                           align_corners=False)
    logits = logits[..., : raw.resized_size[0], : raw.resized_size[1]]
    logits = F.interpolate(logits, size=raw.original_size, mode="bilinear", align_corners=False)[0].numpy()
    cls = raw.class_logits.double().numpy()
    probs = np.exp(cls - cls.max(axis=1, keepdims=True))
    probs = probs / probs.sum(axis=1, keepdims=True)
    pairs = [(float(probs[q, c]), q, c) for q in range(probs.shape[0]) for c in range(probs.shape[1] - 1)]
    pairs.sort(key=lambda t: -t[0])
    out = []
    for prob, q, c in pairs[:max_per_image]:
        binary = logits[q] > 0
        sigmoid = 1 / (1 + np.exp(-logits[q].astype(np.float64)))
        mask_score = float((sigmoid * binary).sum() / (binary.sum() + 1e-6))
        ys, xs = np.where(binary)
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)) if len(xs) else (0.0,) * 4
        if names[c] is not None:
            out.append((names[c], box, prob * mask_score, binary))
    return sorted(out, key=lambda t: -t[2])


# ---------------------------------------------------------------------------------------- detector


def test_postprocess_matches_slow_reference(detector, images):
    raws = detector.forward(images)
    assert [r.original_size for r in raws] == [(48, 64), (40, 40)]
    assert raws[0].resized_size == (64, 85) and raws[0].padded_size == (64, 96)
    assert raws[1].resized_size == (64, 64) and raws[1].padded_size == (64, 64)
    for raw, got in zip(raws, detector.detect(images), strict=True):
        assert raw.class_logits.shape == (8, 81) and raw.mask_logits.shape[0] == 8
        ref = _slow_reference(raw, 100, detector.labels)
        assert len(got) == len(ref) == 100
        assert [d.label for d, _ in got] == [r[0] for r in ref]
        assert [d.box for d, _ in got] == [r[1] for r in ref]
        assert [d.score for d, _ in got] == pytest.approx([r[2] for r in ref], rel=1e-5, abs=1e-7)
        for (_, mask), r in zip(got, ref, strict=True):
            assert np.array_equal(mask, r[3])


def test_detect_plumbing_shapes_and_tight_boxes(detector, images):
    results = detector.detect(images)
    assert len(results) == len(images)
    assert "computer mouse" in detector.labels and "mouse" not in detector.labels
    assert set(detector.labels) == set(COCO_CLASSES)
    nonempty = 0
    for image, pairs in zip(images, results, strict=True):
        scores = [d.score for d, _ in pairs]
        assert scores == sorted(scores, reverse=True)
        for det, mask in pairs:
            assert isinstance(det, Detection) and det.color is None and det.label in COCO_CLASSES
            assert 0.0 <= det.score <= 1.0 and isinstance(det.score, float)
            assert mask.dtype == np.bool_ and mask.shape == image.shape[:2]
            ys, xs = np.where(mask)
            if len(xs):
                nonempty += 1
                assert det.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            else:
                assert det.box == (0.0, 0.0, 0.0, 0.0) and det.score == 0.0
    assert nonempty > 0


def test_odd_image_shapes(detector):
    thin = np.random.default_rng(2).integers(0, 256, (3, 40, 3), dtype=np.uint8)
    pairs = detector.detect([thin])[0]
    assert detector.forward([thin])[0].resized_size == (7, 96)
    assert pairs and all(mask.shape == (3, 40) for _, mask in pairs)


def test_max_per_image_caps_detections(m2f_dir, images):
    small = Mask2FormerDetector(m2f_dir, device="cpu", scale=SMALL_SCALE, max_per_image=5)
    got = small.detect(images[:1])[0]
    assert len(got) == 5
    full = [d for d, _ in Mask2FormerDetector(m2f_dir, device="cpu", scale=SMALL_SCALE).detect(images[:1])[0]]
    # Top-5 by class probability, re-sorted by final score: all of them appear in the full list.
    assert all(d in full for d, _ in got)


def test_batch_of_one_equals_batched(m2f_dir, detector, images):
    single = Mask2FormerDetector(m2f_dir, device="cpu", scale=SMALL_SCALE, batch_size=1)
    same = [images[0], images[0].copy()]
    a = detector.detect(same)
    b = single.detect(same)
    for pa, pb in zip(a, b, strict=True):
        assert [d.label for d, _ in pa] == [d.label for d, _ in pb]
        assert [d.score for d, _ in pa] == pytest.approx([d.score for d, _ in pb], rel=1e-4, abs=1e-6)


def test_detector_rejects_checkpoint_without_coco_labels(tmp_path):
    folder = build_tiny_mask2former(tmp_path / "m", id2label={i: f"LABEL_{i}" for i in range(80)})
    with pytest.raises(PerceptionError, match="does not cover the GenEval classes"):
        Mask2FormerDetector(folder, device="cpu")


def test_detector_bad_image_names_its_index(detector, images):
    with pytest.raises(PerceptionError, match="image 1"):
        detector.detect([images[0], images[1].astype(np.float32)])
    with pytest.raises(PerceptionError, match="image 0"):
        detector.detect([images[0][..., :2]])


def test_detector_nan_is_an_error(m2f_dir, images):
    broken = Mask2FormerDetector(m2f_dir, device="cpu", scale=SMALL_SCALE)
    with torch.no_grad():
        broken.model.class_predictor.weight.fill_(float("nan"))
    with pytest.raises(PerceptionError, match="NaN"):
        broken.detect(images[:1])


# ----------------------------------------------------------------------------------- color: fakes


PALETTE = {"red": (255, 0, 0), "orange": (255, 128, 0), "yellow": (255, 255, 0), "green": (0, 255, 0),
           "blue": (0, 0, 255), "purple": (128, 0, 128), "pink": (255, 192, 203), "brown": (128, 64, 0),
           "black": (0, 0, 0), "white": (255, 255, 255)}
GREY = (153, 153, 153)  # "#999"


def fake_tokenizer(texts: list[str]):
    """Each text -> [color index, template index]; the color is the word after "a photo of a "."""
    rows = []
    for text in texts:
        word = text.removeprefix("a photo of a ").split()[0].removesuffix("-colored")
        template = 1 if "-colored" in text else 2 if text.endswith(" object") else 0
        rows.append([GENEVAL_COLORS.index(word), template])
    return torch.tensor(rows)


def fake_preprocess(pil):
    """PIL crop -> counts of exact palette colors (so #999 and other pixels count for nothing)."""
    arr = np.asarray(pil.convert("RGB")).reshape(-1, 3)
    return torch.tensor([float(np.all(arr == PALETTE[c], axis=1).sum()) for c in GENEVAL_COLORS])


class FakeClip:
    """Text: template t of color c -> (t + 1) e_c + e_{10 + t}; image: its palette counts (+3 zero dims)."""

    def __init__(self, nan_images: bool = False):
        self.text_batches: list[list[int]] = []
        self.image_batches: list[int] = []
        self.nan_images = nan_images

    def encode_text(self, tokens):
        self.text_batches.append(tokens.tolist())
        out = torch.zeros(len(tokens), 13)
        for row, (color, template) in enumerate(tokens.tolist()):
            out[row, color] = template + 1.0
            out[row, 10 + template] = 1.0
        return out

    def encode_image(self, pixels):
        self.image_batches.append(len(pixels))
        out = torch.cat([pixels.float(), torch.zeros(len(pixels), 3)], dim=1)
        return out * float("nan") if self.nan_images else out


def fake_classifier(**kwargs) -> ClipColorClassifier:
    return ClipColorClassifier(FakeClip(**{k: kwargs.pop(k) for k in ["nan_images"] if k in kwargs}),
                               fake_tokenizer, fake_preprocess, device="cpu", **kwargs)


def object_scene():
    """40x40 red image; box (5, 5, 25, 25) is green except an 8x8 blue object (the mask) in its middle."""
    image = np.zeros((40, 40, 3), np.uint8)
    image[:] = PALETTE["red"]
    image[5:25, 5:25] = PALETTE["green"]
    image[11:19, 11:19] = PALETTE["blue"]
    mask = np.zeros((40, 40), bool)
    mask[11:19, 11:19] = True
    return image, mask, (5.0, 5.0, 25.0, 25.0)


# ------------------------------------------------------------------------------------ color: tests


def test_crop_pastes_over_grey_and_rounds_like_pil():
    image, mask, _ = object_scene()
    clf = fake_classifier()
    crop = np.asarray(clf.crop(image, mask, (5.4, 5.6, 24.5, 25.5)))
    # PIL rounds (banker's): x 5.4 -> 5, 24.5 -> 24; y 5.6 -> 6, 25.5 -> 26.
    assert crop.shape == (20, 19, 3)
    inside = mask[6:26, 5:24]
    assert np.all(crop[inside] == PALETTE["blue"])
    assert np.all(crop[~inside] == GREY)
    original = np.asarray(fake_classifier(bgcolor="original").crop(image, mask, (5, 5, 25, 25)))
    assert np.array_equal(original, image[5:25, 5:25])
    whole = np.asarray(fake_classifier(crop=False).crop(image, mask, (5, 5, 25, 25)))
    assert whole.shape == (40, 40, 3) and np.all(whole[0, 0] == GREY)


def test_color_comes_from_the_masked_object():
    image, mask, box = object_scene()
    assert fake_classifier().classify(image, mask, box, "cup") == "blue"
    assert fake_classifier(bgcolor="original").classify(image, mask, box, "cup") == "green"  # ring wins
    assert fake_classifier(bgcolor="original", crop=False).classify(image, mask, box, "cup") == "red"
    assert fake_classifier().classify(image, None, box, "cup") == "green"  # no mask: crop only


def test_prototypes_are_renormalised_means_of_normalised_templates():
    clf = fake_classifier()
    protos = clf.prototypes("tv remote")
    assert protos.shape == (13, 10)
    for c in range(10):
        vecs = []
        for t in range(3):
            v = np.zeros(13)
            v[c], v[10 + t] = t + 1.0, 1.0
            vecs.append(v / np.linalg.norm(v))
        mean = np.mean(vecs, axis=0)
        np.testing.assert_allclose(protos[:, c].numpy(), mean / np.linalg.norm(mean), rtol=1e-6)
    # The official templates, color by color, class name with its space kept; cached per class.
    fake = clf.model
    assert len(fake.text_batches) == 10
    texts = [t.format(color="red", name="tv remote") for t in COLOR_TEMPLATES]
    assert texts == ["a photo of a red tv remote", "a photo of a red-colored tv remote", "a photo of a red object"]
    assert fake.text_batches[0] == fake_tokenizer(texts).tolist()
    clf.prototypes("tv remote")
    assert len(fake.text_batches) == 10
    clf.prototypes("cup")
    assert len(fake.text_batches) == 20


def _queries():
    image, mask, box = object_scene()
    red_obj = np.zeros((40, 40), bool)
    red_obj[30:38, 2:12] = True
    yellow = image.copy()
    yellow[11:19, 11:19] = PALETTE["yellow"]
    return [ColorQuery(image, mask, box, "cup"), ColorQuery(image, red_obj, (2, 30, 12, 38), "dog"),
            ColorQuery(yellow, mask, box, "cup"), ColorQuery(image, mask, (11, 11, 19, 19), "orange"),
            ColorQuery(yellow, None, (11, 11, 19, 19), "cup")]


def test_batched_equals_one_by_one_with_fake_embedder():
    clf = fake_classifier(batch_size=2)
    queries = _queries()
    batched = clf.classify_batch(queries)
    assert batched == ["blue", "red", "yellow", "blue", "yellow"]
    assert clf.model.image_batches == [2, 2, 1]
    assert [clf.classify(q.image, q.mask, q.box, q.class_name) for q in queries] == batched


def test_batched_equals_one_by_one_with_tiny_open_clip(tiny_clip_classifier):
    queries = _queries()
    batched = tiny_clip_classifier.classify_batch(queries)
    single = [tiny_clip_classifier.classify(q.image, q.mask, q.box, q.class_name) for q in queries]
    assert batched == single and all(c in GENEVAL_COLORS for c in batched)
    together = tiny_clip_classifier._logits(queries)
    apart = torch.cat([tiny_clip_classifier._logits([q]) for q in queries])
    assert together.shape == (5, 10) and together.dtype == torch.float32
    torch.testing.assert_close(together, apart, rtol=1e-4, atol=1e-4)


def test_color_errors_are_clear():
    image, mask, box = object_scene()
    with pytest.raises(PerceptionError, match="NaN"):
        fake_classifier(nan_images=True).classify(image, mask, box, "cup")
    with pytest.raises(PerceptionError, match="mask shape"):
        fake_classifier().classify(image, mask[:30], box, "cup")
    with pytest.raises(PerceptionError, match="empty crop"):
        fake_classifier().classify(image, mask, (10, 10, 10, 20), "cup")


# ------------------------------------------------------------------------------------------- scorer


class FakeDetector:
    def __init__(self, per_image):
        self.per_image = per_image

    def describe(self):
        return {"model": "fake"}

    def detect(self, images):
        assert len(images) == len(self.per_image)
        return [list(pairs) for pairs in self.per_image]


class SpyClassifier:
    def __init__(self, inner: ClipColorClassifier):
        self.inner = inner
        self.calls: list[list[tuple[str, tuple]]] = []

    def describe(self):
        return self.inner.describe()

    def classify_batch(self, queries):
        self.calls.append([(q.class_name, q.box) for q in queries])
        return self.inner.classify_batch(queries)


def _box_mask(box, shape=(40, 40)):
    mask = np.zeros(shape, bool)
    x0, y0, x1, y1 = (int(v) for v in box)
    mask[y0:y1, x0:x1] = True
    return mask


def scorer_scene():
    """A blue cup (0.95), a red cup (0.5), three dogs (0.95, 0.92, 0.85) on a white image."""
    image = np.full((40, 40, 3), 255, np.uint8)
    objects = [("cup", (2, 2, 12, 12), 0.95, "blue"), ("cup", (20, 2, 30, 12), 0.5, "red"),
               ("dog", (2, 20, 10, 28), 0.95, "brown"), ("dog", (12, 20, 20, 28), 0.92, "brown"),
               ("dog", (24, 20, 32, 28), 0.85, "black")]
    pairs = []
    for label, box, score, color in objects:
        x0, y0, x1, y1 = box
        image[y0:y1, x0:x1] = PALETTE[color]
        pairs.append((Detection(label, tuple(float(v) for v in box), score), _box_mask(box)))
    return image, pairs


METAS = [
    {"tag": "colors", "prompt": "a photo of a blue cup", "include": [{"class": "cup", "count": 1, "color": "blue"}]},
    {"tag": "colors", "prompt": "a photo of a red cup", "include": [{"class": "cup", "count": 1, "color": "red"}]},
    {"tag": "counting", "prompt": "a photo of two dogs", "include": [{"class": "dog", "count": 2}],
     "exclude": [{"class": "dog", "count": 3}]},
    {"tag": "two_object", "prompt": "a photo of a cup and a dog",
     "include": [{"class": "cup", "count": 1}, {"class": "dog", "count": 1}]},
    {"tag": "color_attr", "prompt": "a photo of a red cup and a brown dog",
     "include": [{"class": "cup", "count": 1, "color": "red"}, {"class": "dog", "count": 1, "color": "brown"}]},
]


def test_scorer_with_injected_perception():
    image, pairs = scorer_scene()
    spy = SpyClassifier(fake_classifier())
    scorer = Mask2FormerScorer(detector=FakeDetector([pairs] * len(METAS)), color_classifier=spy, device="cpu")
    records = scorer.score([image] * len(METAS), METAS)

    assert [r["correct"] for r in records] == [True, False, True, True, False]
    assert records[1]["reason"] == "expected red cup>=1, found 0 red; and 1 blue"
    assert records[4]["reason"] == "expected red cup>=1, found 0 red; and 1 blue"
    # Colors only for clauses that ask one, only the top-count kept detection of that class, one batch.
    assert spy.calls == [[("cup", (2.0, 2.0, 12.0, 12.0)), ("cup", (2.0, 2.0, 12.0, 12.0)),
                          ("cup", (2.0, 2.0, 12.0, 12.0)), ("dog", (2.0, 20.0, 10.0, 28.0))]]
    # Records keep what the official "details" keeps: above the tag's cut, with colors where computed.
    assert [(d["label"], d["score"], d["color"]) for d in records[0]["detections"]] == [
        ("cup", 0.95, "blue"), ("cup", 0.5, None), ("dog", 0.95, None), ("dog", 0.92, None), ("dog", 0.85, None)]
    assert [(d["label"], d["score"]) for d in records[2]["detections"]] == [("cup", 0.95), ("dog", 0.95), ("dog", 0.92)]
    for record, meta in zip(records, METAS, strict=True):
        assert set(record) == {"correct", "reason", "detections"}
        json.dumps(record)
        colors = {(d["label"], tuple(d["box"])): d["color"] for d in record["detections"]}
        dets = [replace(d, color=colors.get((d.label, d.box))) for d, _ in pairs]
        assert judge(meta, dets).correct == record["correct"]
    json.dumps(scorer.describe())


def test_scorer_skips_colors_the_judge_never_reads():
    image, pairs = scorer_scene()
    spy = SpyClassifier(fake_classifier())
    scorer = Mask2FormerScorer(detector=FakeDetector([pairs]), color_classifier=spy, device="cpu")
    meta = {"tag": "colors", "prompt": "three red cups", "include": [{"class": "cup", "count": 3, "color": "red"}]}
    record = scorer.score([image], [meta])[0]
    assert spy.calls == [] and record["reason"] == "expected cup>=3, found 2"


def test_scorer_thresholds_are_the_judges():
    image, pairs = scorer_scene()
    meta = METAS[2]  # exactly two dogs above 0.9
    loose = Mask2FormerScorer(detector=FakeDetector([pairs]), color_classifier=fake_classifier(), device="cpu",
                              counting_threshold=0.8)
    record = loose.score([image], [meta])[0]
    assert not record["correct"] and record["reason"] == "expected dog<3, found 3"


def test_scorer_input_mismatch():
    image, pairs = scorer_scene()
    scorer = Mask2FormerScorer(detector=FakeDetector([pairs]), color_classifier=fake_classifier(), device="cpu")
    with pytest.raises(ValueError, match="2 images but 1 metadata"):
        scorer.score([image, image], METAS[:1])


def test_scorer_end_to_end_with_tiny_models(m2f_dir, clip_weights, images):
    scorer = Mask2FormerScorer(detector_model=str(m2f_dir), clip_model=TINY_CLIP_NAME,
                               clip_pretrained=str(clip_weights), device="cpu", threshold=0.0,
                               detector_kwargs={"scale": SMALL_SCALE}, color_kwargs={"batch_size": 8})
    top = scorer.detector.detect(images[:1])[0][0][0].label
    metas = [{"tag": "colors", "prompt": f"a photo of a red {top}",
              "include": [{"class": top, "count": 1, "color": "red"}]},
             {"tag": "counting", "prompt": "a photo of two cats", "include": [{"class": "cat", "count": 2}]}]
    records = scorer.score(images, metas)
    assert len(records) == 2
    colored = [d for d in records[0]["detections"] if d["color"] is not None]
    assert len(colored) == 1 and colored[0]["label"] == top and colored[0]["color"] in GENEVAL_COLORS
    assert records[0]["correct"] == (colored[0]["color"] == "red")
    assert records[1]["detections"] == [] and not records[1]["correct"]  # random scores never reach 0.9
    for record in records:
        assert isinstance(record["correct"], bool)
        assert all(0.0 <= d["score"] <= 1.0 for d in record["detections"])
    described = scorer.describe()
    assert described["name"] == "geneval-mask2former" and described["detector"]["scale"] == list(SMALL_SCALE)
    json.dumps(described)
