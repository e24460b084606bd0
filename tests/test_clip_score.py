"""CLIP loading and CLIP score (irisbench.metrics.clip_score) on a tiny random open_clip model."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from clip_tiny import TINY_CLIP  # noqa: E402

from irisbench.metrics.clip_score import (  # noqa: E402
    SCORE_SCALES,
    ClipLoadError,
    ImageInputError,
    PickleRefusedError,
    PromptTooLongError,
    WeightsNotAvailableError,
    apply_scale,
    clip_score,
    load_clip,
    score_identity,
)

PROMPTS = ["a photo of a red circle", "a photo of two squares", "a photo of a red circle",
           "big blue diamond top left ; small white triangle bottom right"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


def _images(n: int, seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _direct_cosines(clip, images, prompts) -> np.ndarray:
    """Reference: preprocess each image with PIL, encode, normalise by hand, cosine per pair."""
    from PIL import Image

    with torch.no_grad():
        pix = torch.stack([clip.preprocess(Image.fromarray(im)) for im in images])
        fi = clip.model.encode_image(pix)
        ft = clip.model.encode_text(clip.tokenizer(list(prompts)))
    fi = fi / fi.norm(dim=-1, keepdim=True)
    ft = ft / ft.norm(dim=-1, keepdim=True)
    return (fi * ft).sum(dim=-1).double().numpy()


def test_clip_score_matches_direct_computation(tiny_clip):
    images = _images(len(PROMPTS))
    got = clip_score(images, PROMPTS, tiny_clip, scale="raw")
    want = _direct_cosines(tiny_clip, images, PROMPTS)
    assert got.shape == (4,) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, atol=1e-5)
    # a list of arrays and an (N, H, W, 3) array give the same scores
    np.testing.assert_allclose(clip_score(list(images), PROMPTS, tiny_clip), got, atol=1e-6)


def test_scale_modes_by_hand(tiny_clip):
    cos = np.array([-0.2, 0.0, 0.31, 1.0])
    np.testing.assert_allclose(apply_scale(cos, "raw"), cos)
    np.testing.assert_allclose(apply_scale(cos, "100-clamp"), [0.0, 0.0, 31.0, 100.0])
    np.testing.assert_allclose(apply_scale(cos, "2.5"), [0.0, 0.0, 0.775, 2.5])
    images = _images(len(PROMPTS), seed=1)
    raw = clip_score(images, PROMPTS, tiny_clip, scale="raw")
    np.testing.assert_allclose(clip_score(images, PROMPTS, tiny_clip, scale="100-clamp"), np.maximum(100 * raw, 0),
                               atol=1e-9)
    np.testing.assert_allclose(clip_score(images, PROMPTS, tiny_clip, scale="2.5"), 2.5 * np.maximum(raw, 0), atol=1e-9)
    with pytest.raises(ValueError, match="unknown CLIP score scale 'cider'"):
        clip_score(images, PROMPTS, tiny_clip, scale="cider")
    ident = score_identity(tiny_clip, "2.5")
    assert ident["score_scale"] == "2.5" and ident["score_formula"] == SCORE_SCALES["2.5"]
    assert ident["backbone"] == TINY_CLIP


def test_encoders_are_normalised_and_batch_independent(tiny_clip):
    images = _images(5, seed=2)
    a = tiny_clip.encode_images(images, batch_size=2)
    b = tiny_clip.encode_images(images, batch_size=64)
    assert a.shape == (5, 32) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5)
    t = tiny_clip.encode_texts(PROMPTS, batch_size=3)
    np.testing.assert_allclose(t, tiny_clip.encode_texts(PROMPTS), atol=1e-5)
    np.testing.assert_allclose(t[0], t[2], atol=1e-6)  # same prompt, same features
    unnorm = tiny_clip.encode_images(images, normalize=False)
    np.testing.assert_allclose(unnorm / np.linalg.norm(unnorm, axis=1, keepdims=True), a, atol=1e-5)


def test_bad_inputs_are_named(tiny_clip):
    images = list(_images(2))
    with pytest.raises(ImageInputError, match=r"images\[1\] must be a uint8 \(H, W, 3\) array, got float64"):
        clip_score([images[0], images[1].astype(float)], PROMPTS[:2], tiny_clip)
    with pytest.raises(ImageInputError, match=r"images\[0\].*\(32, 32\)"):
        tiny_clip.encode_images([images[0][..., 0]])
    with pytest.raises(ValueError, match="got 2 images and 3 prompts"):
        clip_score(images, PROMPTS[:3], tiny_clip)
    with pytest.raises(TypeError, match="one per image"):
        clip_score(images, "a photo of a circle", tiny_clip)
    with pytest.raises(PromptTooLongError, match=r"texts\[1\] .* has 15 tokens .* at most 14"):
        tiny_clip.encode_texts(["a circle", " ".join(["red"] * 15)])
    assert clip_score([], [], tiny_clip).shape == (0,)


def test_weights_file_roundtrip_and_pickle_policy(tiny_clip, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in tiny_clip.model.state_dict().items()}
    st = tmp_path / "tiny.safetensors"
    save_file(state, str(st))
    loaded = load_clip(TINY_CLIP, str(st))
    images = _images(3, seed=3)
    np.testing.assert_allclose(loaded.encode_images(images), tiny_clip.encode_images(images), atol=1e-6)
    np.testing.assert_allclose(loaded.encode_texts(PROMPTS), tiny_clip.encode_texts(PROMPTS), atol=1e-6)
    d = loaded.describe()
    assert d["weights_sha256"] == hashlib.sha256(st.read_bytes()).hexdigest()
    assert d["backbone"] == TINY_CLIP and d["pretrained"] == str(st) and d["embed_dim"] == 32

    pt = tmp_path / "tiny.pt"
    torch.save(state, pt)
    with pytest.raises(PickleRefusedError, match=r"refusing to load the pickle weights file .*tiny\.pt.*allow_pickle"):
        load_clip(TINY_CLIP, str(pt))
    from_pickle = load_clip(TINY_CLIP, str(pt), allow_pickle=True)
    np.testing.assert_allclose(from_pickle.encode_images(images), tiny_clip.encode_images(images), atol=1e-6)

    odd = tmp_path / "tiny.npz"
    odd.write_bytes(b"x")
    with pytest.raises(ClipLoadError, match="suffix '.npz'"):
        load_clip(TINY_CLIP, str(odd))
    with pytest.raises(ClipLoadError, match="does not exist"):
        load_clip(TINY_CLIP, str(tmp_path / "missing.safetensors"))


def test_unknown_names_and_uncached_tags():
    with pytest.raises(ClipLoadError, match="unknown CLIP backbone 'ViT-B-31'.*Did you mean"):
        load_clip("ViT-B-31", None)
    with pytest.raises(ClipLoadError, match="neither an existing file nor a pretrained tag of 'ViT-B-32'"):
        load_clip("ViT-B-32", "no-such-tag")
    with pytest.raises(WeightsNotAvailableError, match="not on this machine .*never downloads"):
        load_clip("ViT-B-32", "laion2b_s34b_b79k")
