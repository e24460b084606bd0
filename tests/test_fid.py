"""FID and KID (irisbench.metrics.fid) on a tiny random CLIP, checked against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchmetrics")
scipy_linalg = pytest.importorskip("scipy.linalg")

from clip_tiny import TINY_CLIP  # noqa: E402

from irisbench.metrics.fid import FeatureError, SampleSizeError, fid, kid, make_feature_extractor  # noqa: E402


class NotATensor:
    """A pickled object that torch.load(weights_only=True) must refuse."""


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


@pytest.fixture(scope="module")
def features(tiny_clip):
    return make_feature_extractor("clip", clip=tiny_clip)


def _images(n: int, seed: int, lo: int = 0, hi: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, size=(n, 32, 32, 3), dtype=np.uint8)


def _feats(features, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        return features(x).double().numpy()


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Reference Fréchet distance of the Gaussians fitted to feature rows a and b (numpy/scipy)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_feature_module_contract(features):
    assert features.num_features == 32
    d = features.describe()
    assert d["kind"] == "clip" and d["normalized"] is False and d["clip"]["backbone"] == TINY_CLIP
    images = _images(3, seed=0)
    f = _feats(features, images)
    # same features as the CLIP wrapper's own path (PIL preprocessing, resize 32 -> 64)
    np.testing.assert_allclose(f, features.clip.encode_images(images, normalize=False), atol=1e-5)
    # float input in [0, 1] is accepted and equals the uint8 path
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    np.testing.assert_allclose(features(x).numpy(), f, atol=1e-5)
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        features(x * 255)


def test_fid_of_a_set_against_itself_is_zero(features):
    a = _images(40, seed=1)
    other = fid(a, _images(40, seed=2, lo=100, hi=156), features=features)
    assert other > 1e-3
    assert abs(fid(a, a, features=features)) < 1e-4 * other


def test_fid_matches_hand_computed_frechet_distance(features):
    real, fake = _images(48, seed=3), _images(40, seed=4, lo=60, hi=200)
    got = fid(real, fake, features=features, batch_size=16)
    want = _frechet(_feats(features, real), _feats(features, fake))
    assert got == pytest.approx(want, rel=2e-3)


def test_kid_matches_hand_computed_mmd_and_is_seeded(features):
    real, fake = _images(10, seed=5), _images(10, seed=6, lo=60, hi=200)
    # one subset of the full size: the unbiased MMD^2 estimate does not depend on the permutation drawn
    mean, std = kid(real, fake, features=features, subset_size=10, subsets=1)
    x, y = _feats(features, real), _feats(features, fake)
    d, m = x.shape[1], len(x)

    def k(a, b):  # torchmetrics' default kernel: (a.b / d + 1) ** 3
        return (a @ b.T / d + 1.0) ** 3

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    want = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.sum() / m**2
    assert mean == pytest.approx(want, rel=1e-3, abs=1e-7)
    assert std == 0.0
    assert kid(real, fake, features=features, subset_size=5, subsets=7, seed=3) == \
        kid(real, fake, features=features, subset_size=5, subsets=7, seed=3)


def test_kid_and_fid_sample_size_errors(features):
    real, fake = _images(6, seed=7), _images(4, seed=8)
    with pytest.raises(SampleSizeError, match=r"subset_size=5 .* 6 real and 4 fake .* valid range is \[2, 4\]"):
        kid(real, fake, features=features, subset_size=5)
    with pytest.raises(SampleSizeError, match=r"subset_size=1 .* valid range is \[2, 4\]"):
        kid(real, fake, features=features, subset_size=1)
    with pytest.raises(SampleSizeError, match="valid range is empty"):
        kid(real, fake[:1], features=features, subset_size=2)
    with pytest.raises(SampleSizeError, match="at least 2 real and 2 fake images, got 6 real and 1 fake"):
        fid(real, fake[:1], features=features)
    with pytest.raises(ValueError, match="differ in size"):
        fid([real[0], real[1][:16]], fake, features=features)


def test_inception_needs_a_local_safe_file(tmp_path):
    with pytest.raises(FeatureError, match="LOCAL weights file.*cannot reach"):
        make_feature_extractor("inception")
    with pytest.raises(FeatureError, match="does not exist"):
        make_feature_extractor("inception", weights_path=tmp_path / "nope.pth")
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"fc.weight": torch.zeros(1), "extra": NotATensor()}, unsafe)
    with pytest.raises(FeatureError, match="not a plain tensor state dict"):
        make_feature_extractor("inception", weights_path=unsafe)
    not_tensors = tmp_path / "not_tensors.pth"
    torch.save({"fc.weight": "a string"}, not_tensors)
    with pytest.raises(FeatureError, match="a non-empty dict of tensors"):
        make_feature_extractor("inception", weights_path=not_tensors)
    with pytest.raises(FeatureError, match="unknown feature kind 'dino'"):
        make_feature_extractor("dino")


@pytest.mark.slow
def test_inception_from_a_local_random_weights_file(tmp_path, monkeypatch):
    """The real InceptionV3 path, with a random-init state dict saved locally (no real weights here)."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    with monkeypatch.context() as m:  # build the architecture without its (downloading) weight loader
        m.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        state = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict()
    path = tmp_path / "inception-random.pth"
    torch.save(state, path)
    feats = make_feature_extractor("inception", weights_path=path)
    d = feats.describe()
    assert d["num_features"] == 2048 and d["reference_weights"] is False
    a, b = _images(2, seed=9), _images(2, seed=10, lo=0, hi=64)
    assert abs(fid(a, a, features=feats)) < 1e-2 * max(fid(a, b, features=feats), 1e-6)
