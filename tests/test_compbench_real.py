"""Tests for ``irisbench.scorers.compbench_real`` on tiny random models built offline (tests/perception_tiny.py).

BLIP: the one-step first-token logits are checked against transformers' own ``generate`` first step and
against batch composition; OWLv2: the post-processing against the processor's, and padded query lists;
CLIP cosine: against a direct computation with the same open_clip model.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from perception_tiny import (  # noqa: E402
    TINY_CLIP_NAME,
    build_tiny_blip_vqa,
    build_tiny_owlv2,
    register_tiny_open_clip,
)

from irisbench.protocols.compbench import pre_question  # noqa: E402
from irisbench.scorers.compbench_real import (  # noqa: E402
    BlipVQA,
    BoxDetection,
    ClipCosine,
    OpenVocabDetector,
)
from irisbench.scorers.geneval_real import PerceptionError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), rng.integers(0, 256, (48, 32, 3), dtype=np.uint8),
            rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)]


QUESTIONS = ["a red cube?", "A blue, metallic ball and the green cube!?", "a bird?"]


# ------------------------------------------------------------------------------------------------ BLIP


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory):
    return build_tiny_blip_vqa(tmp_path_factory.mktemp("blip"))


@pytest.fixture(scope="module")
def blip(blip_dir):
    return BlipVQA(blip_dir, device="cpu", batch_size=2)


def test_pre_question_matches_blip():
    assert pre_question('A "Red" Cube (Metallic)!?  ') == "a red cube metallic?"
    assert pre_question("a blue, green; ball.") == "a blue, green ball"
    assert pre_question("one two three", max_words=2) == "one two"


def test_blip_token_ids_come_from_the_tokenizer(blip):
    vocab = blip.tokenizer.get_vocab()
    assert (blip.yes_id, blip.no_id) == (vocab["yes"], vocab["no"])
    assert blip.bos_id == vocab["[DEC]"] == blip.model.config.text_config.bos_token_id
    assert blip.enc_id == vocab["[ENC]"]
    ids = blip._token_ids(QUESTIONS)
    assert all(row[0] == vocab["[ENC]"] and row[-1] == vocab["[SEP]"] for row in ids)
    assert blip._token_ids(["a red cube?"])[0][1:-1] == [vocab[w] for w in ["a", "red", "cube", "?"]]


def test_blip_first_step_equals_transformers_generate(blip_dir, images):
    # transformers' generate keeps [CLS] first, so compare with the [ENC] replacement off.
    plain = BlipVQA(blip_dir, device="cpu", use_enc_token=False)
    for image, question in zip(images, QUESTIONS, strict=True):
        ours = plain.first_token_logits([image], [question])
        inputs = plain.processor(images=[image], text=[pre_question(question)], return_tensors="pt")
        with torch.inference_mode():
            out = plain.model.generate(**inputs, max_new_tokens=1, do_sample=False, output_logits=True,
                                       return_dict_in_generate=True)
        torch.testing.assert_close(ours, out.logits[0].float(), rtol=1e-5, atol=1e-5)


def test_blip_yes_no_probabilities(blip, images):
    pairs = blip.yes_no_prob(images, QUESTIONS)
    probs = torch.softmax(blip.first_token_logits(images, QUESTIONS), dim=-1)
    assert len(pairs) == 3
    for (p_yes, p_no), row in zip(pairs, probs, strict=True):
        assert isinstance(p_yes, float) and 0.0 <= p_yes <= 1.0 and 0.0 <= p_no <= 1.0 and p_yes + p_no <= 1.0
        assert (p_yes, p_no) == pytest.approx((float(row[blip.yes_id]), float(row[blip.no_id])), rel=1e-6)
    assert len({round(p[0], 8) for p in pairs}) == 3  # different images/questions give different answers


def test_blip_batching_does_not_change_numbers(blip, images):
    # Mixed question lengths in one call (batch_size 2) == one item at a time.
    together = blip.first_token_logits(images, QUESTIONS)
    apart = torch.cat([blip.first_token_logits([im], [q]) for im, q in zip(images, QUESTIONS, strict=True)])
    torch.testing.assert_close(together, apart, rtol=1e-5, atol=1e-6)
    swapped = blip.first_token_logits(images[::-1], QUESTIONS[::-1])
    torch.testing.assert_close(swapped, together.flip(0), rtol=1e-5, atol=1e-6)


def test_blip_enc_token_is_used(blip_dir, blip, images):
    plain = BlipVQA(blip_dir, device="cpu", use_enc_token=False)
    assert plain.enc_id is None
    assert not torch.allclose(plain.first_token_logits(images[:1], QUESTIONS[:1]),
                              blip.first_token_logits(images[:1], QUESTIONS[:1]))


def test_blip_errors(blip_dir, blip, images):
    with pytest.raises(PerceptionError, match="'maybe' is not a single token"):
        BlipVQA(blip_dir, device="cpu", yes="maybe")
    with pytest.raises(PerceptionError, match="2 images but 1 questions"):
        blip.yes_no_prob(images[:2], QUESTIONS[:1])
    with pytest.raises(PerceptionError, match="image 0"):
        blip.yes_no_prob([images[0].astype(np.float32)], QUESTIONS[:1])
    broken = BlipVQA(blip_dir, device="cpu")
    with torch.no_grad():
        broken.model.text_decoder.cls.predictions.bias.fill_(float("nan"))
    with pytest.raises(PerceptionError, match="NaN"):
        broken.yes_no_prob(images[:1], QUESTIONS[:1])


# ------------------------------------------------------------------------------------------------ OWLv2


@pytest.fixture(scope="module")
def owl(tmp_path_factory):
    return OpenVocabDetector(build_tiny_owlv2(tmp_path_factory.mktemp("owl")), device="cpu", threshold=0.2)


def _hf_reference(owl, image, queries, threshold):
    """transformers' own post-processing (one image, no padded queries), clipped and sorted like ours."""
    inputs = owl.processor(text=[queries], images=[image], return_tensors="pt", padding="max_length",
                           truncation=True, max_length=owl.max_text_tokens)
    with torch.inference_mode():
        out = owl.model(**inputs)
    h, w = image.shape[:2]
    res = owl.processor.post_process_grounded_object_detection(out, threshold=threshold, target_sizes=[(h, w)])[0]
    boxes = res["boxes"].clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    order = torch.sort(res["scores"], descending=True, stable=True).indices
    return [(queries[int(res["labels"][j])], boxes[j].tolist(), float(res["scores"][j])) for j in order]


def test_owl_matches_transformers_postprocess(owl, images):
    queries = ["a photo of a cat", "a dog"]
    got = owl.detect(images, queries, threshold=0.0)
    assert len(got) == len(images)
    for image, dets in zip(images, got, strict=True):
        ref = _hf_reference(owl, image, queries, 0.0)
        assert len(dets) == len(ref) > 0
        assert [d.label for d in dets] == [r[0] for r in ref]
        for d, r in zip(dets, ref, strict=True):
            assert d.box == pytest.approx(tuple(r[1]), abs=1e-3) and d.score == pytest.approx(r[2], abs=1e-6)


def test_owl_threshold_filters(owl, images):
    everything = owl.detect(images[:1], ["a cup", "a dog"], threshold=0.0)[0]
    cut = float(np.median([d.score for d in everything]))
    assert owl.detect(images[:1], ["a cup", "a dog"], threshold=cut)[0] == [d for d in everything if d.score > cut]
    assert owl.threshold == 0.2 and all(d.score > 0.2 for d in owl.detect(images[:1], ["a cup"])[0])


def test_owl_detections_are_well_formed(owl, images):
    for image, dets in zip(images, owl.detect(images, ["a cup"], threshold=0.0), strict=True):
        h, w = image.shape[:2]
        scores = [d.score for d in dets]
        assert scores == sorted(scores, reverse=True)
        for d in dets:
            assert isinstance(d, BoxDetection) and d.label == "a cup"
            x0, y0, x1, y1 = d.box
            assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h
            assert 0.0 < d.score <= 1.0


def test_owl_per_image_queries_ignore_padding(owl, images):
    mixed = owl.detect(images[:2], [["a cat"], ["a bird", "a car", "a cat"]], threshold=0.0)
    alone = owl.detect(images[:1], [["a cat"]], threshold=0.0)
    assert {d.label for d in mixed[0]} == {"a cat"}
    assert [d.score for d in mixed[0]] == pytest.approx([d.score for d in alone[0]], abs=1e-5)
    assert {d.label for d in mixed[1]} <= {"a bird", "a car", "a cat"}


def test_owl_errors(owl, images):
    with pytest.raises(PerceptionError, match="non-blank"):
        owl.detect(images[:1], [["a cat", "  "]])
    with pytest.raises(PerceptionError, match="2 images but 1 query lists"):
        owl.detect(images[:2], [["a cat"]])


# ------------------------------------------------------------------------------------------ CLIP cosine


@pytest.fixture(scope="module")
def clip_cosine(tmp_path_factory):
    weights = register_tiny_open_clip(tmp_path_factory.mktemp("clip"))
    return ClipCosine.from_open_clip(TINY_CLIP_NAME, str(weights), device="cpu", batch_size=2)


def test_clip_cosine_is_raw_cosine(clip_cosine, images):
    from PIL import Image

    texts = ["a red cube", "a cat on a mat", "two dogs"]
    got = clip_cosine.cosine(images, texts)
    model = clip_cosine.model
    with torch.inference_mode():
        img = model.encode_image(torch.stack([clip_cosine.preprocess(Image.fromarray(im)) for im in images]))
        txt = model.encode_text(clip_cosine.tokenizer(texts))
    expected = (img / img.norm(dim=-1, keepdim=True) * (txt / txt.norm(dim=-1, keepdim=True))).sum(-1)
    assert got == pytest.approx(expected.tolist(), abs=1e-5)
    assert all(-1.0 <= c <= 1.0 for c in got) and len(set(got)) == 3


def test_clip_cosine_errors(clip_cosine, images):
    with pytest.raises(PerceptionError, match="2 images but 1 texts"):
        clip_cosine.cosine(images[:2], ["a cat"])

    class NanClip:
        def encode_image(self, pixels):
            return torch.full((len(pixels), 4), float("nan"))

        def encode_text(self, tokens):
            return torch.ones((len(tokens), 4))

    nan = ClipCosine(NanClip(), clip_cosine.tokenizer, clip_cosine.preprocess, device="cpu")
    with pytest.raises(PerceptionError, match="NaN"):
        nan.cosine(images[:1], ["a cat"])
