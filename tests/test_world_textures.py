"""The textures world: per-patch shading, its lossy tokenizer, and an exact judge on its images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from irisbench.core.errors import UsageError
from irisbench.protocols.geneval import judge
from irisbench.world.detector import detect
from irisbench.world.prompts import build_splits
from irisbench.world.sampler import random_scene, scene_for
from irisbench.world.scene import render_batch
from irisbench.world.textures import SHADES, check_world, render_world, shade
from irisbench.world.tokenizer import (
    PatchTokenizer,
    TokenizerFileError,
    fit_patch_tokenizer,
    theoretical_textured_patches,
)
from irisbench.world.vocab import PATCH


@pytest.fixture(scope="module")
def textures_tok() -> PatchTokenizer:
    from irisbench.train.pretrain import WORLD_RECIPES

    return fit_patch_tokenizer(n_scenes=4000, seed=0, max_codes=WORLD_RECIPES["textures"]["max_codes"],
                               world="textures")


def test_shading_shifts_each_patch_by_one_shade() -> None:
    rng = np.random.default_rng(0)
    flat = render_batch([random_scene(rng) for _ in range(200)])
    shaded = shade(flat, np.random.default_rng(1))
    # the documented draw: one uniform index into SHADES per patch, (image, row, column)
    idx = np.random.default_rng(1).integers(len(SHADES), size=(200, 8, 8))
    offset = np.array(SHADES)[idx]
    for i, y, x in [(0, 0, 0), (7, 3, 5), (199, 7, 7)]:
        patch = flat[i, y * PATCH:(y + 1) * PATCH, x * PATCH:(x + 1) * PATCH].astype(int)
        expected = np.clip(patch + offset[i, y, x], 0, 255)
        np.testing.assert_array_equal(shaded[i, y * PATCH:(y + 1) * PATCH, x * PATCH:(x + 1) * PATCH], expected)
    full = np.clip(flat.astype(int) + np.repeat(np.repeat(offset, PATCH, 1), PATCH, 2)[..., None], 0, 255)
    np.testing.assert_array_equal(shaded, full)
    # the shades are drawn uniformly: each near a third of 12,800 patches
    counts = np.bincount(idx.ravel(), minlength=len(SHADES))
    assert (np.abs(counts / counts.sum() - 1 / 3) < 0.03).all(), counts
    # no pixel moves by more than one shade step (what keeps the detector exact)
    assert np.abs(shaded.astype(int) - flat.astype(int)).max() <= max(SHADES)


def test_render_world_shapes_is_the_flat_render_and_textures_needs_an_rng() -> None:
    rng = np.random.default_rng(2)
    scenes = [random_scene(rng) for _ in range(8)]
    np.testing.assert_array_equal(render_world(scenes, "shapes"), render_batch(scenes))
    a = render_world(scenes, "textures", np.random.default_rng(5))
    b = render_world(scenes, "textures", np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert (a != render_batch(scenes)).any()
    with pytest.raises(UsageError, match="needs an rng"):
        render_world(scenes, "textures")
    with pytest.raises(UsageError, match="shapes, textures"):
        check_world("tiles")


def test_textures_tokenizer_is_lossy_but_keeps_the_judge(textures_tok: PatchTokenizer) -> None:
    """The issue's bar: the exact judge's verdict survives encode/decode on >= 99.5% of scenes."""
    theory = theoretical_textured_patches()
    # 4,000 counted scenes meet almost every possible shaded patch (the rarest few may be missing)
    assert len(theory) >= textures_tok.distinct_patches > textures_tok.codebook_size == 3328
    assert {bytes(r) for r in textures_tok.codebook} <= {bytes(r) for r in theory}
    rng = np.random.default_rng(11)
    mds = build_splits(0)["test"] * 2
    scenes = [scene_for(md, rng) for md in mds]
    images = render_world(scenes, "textures", rng)
    recon = textures_tok.decode(textures_tok.encode(images))
    exact_pixels = float((recon == images).all(-1).mean())
    assert exact_pixels < 0.99  # lossy: some patches decode to a neighbour code
    truth = [judge(md, detect(x)).correct for md, x in zip(mds, images, strict=True)]
    after = [judge(md, detect(x)).correct for md, x in zip(mds, recon, strict=True)]
    assert all(truth)  # the detector is exact on the shaded renders themselves
    rate = float(np.mean(after))
    print(f"\ntextures tokenizer K={textures_tok.codebook_size}: exact pixels {exact_pixels:.4f}, "
          f"verdicts kept {rate:.4f} of {len(mds)}")
    assert rate >= 0.995


def test_tokenizer_file_records_its_world(textures_tok: PatchTokenizer, tmp_path: Path) -> None:
    path = tmp_path / "tok.safetensors"
    textures_tok.save(path)
    back = PatchTokenizer.load(path)
    assert back.world == "textures" and back.distinct_patches == textures_tok.distinct_patches
    from safetensors.numpy import save_file

    save_file({"codebook": textures_tok.codebook}, str(path),
              metadata={"format": "irisbench.patch_tokenizer.v1", "patch": "4", "canvas": "32", "world": "tiles"})
    with pytest.raises(TokenizerFileError, match="'world' is 'tiles'"):
        PatchTokenizer.load(path)


def test_pretrain_recipe_per_world() -> None:
    from irisbench.train.pretrain import PretrainConfig, PretrainError

    assert PretrainConfig.for_world("shapes") == PretrainConfig()
    t = PretrainConfig.for_world("textures", {"steps": 5})
    assert (t.world, t.max_codes, t.steps) == ("textures", 3328, 5)
    with pytest.raises(UsageError, match="--world must be one of"):
        PretrainConfig.for_world("tiles")
    with pytest.raises(PretrainError, match="world must be one of"):
        PretrainConfig(world="tiles").check()


def test_textures_batches_are_shaded_and_deterministic(textures_tok: PatchTokenizer) -> None:
    from irisbench.policies.shapes_lm import ShapesVocab
    from irisbench.train.pretrain import BatchMaker, PretrainConfig

    vocab = ShapesVocab.from_world(textures_tok.codebook_size)
    cfg = PretrainConfig.for_world("textures", {"batch_size": 16})
    a, b = BatchMaker(cfg, vocab, textures_tok), BatchMaker(cfg, vocab, textures_tok)
    assert a.sequences(3) == b.sequences(3)
    flat = BatchMaker(PretrainConfig(batch_size=16), ShapesVocab.from_world(textures_tok.codebook_size), textures_tok)
    # same scenes and plans (the shading has its own random stream), different image codes
    seq_t, seq_f = a.sequences(3)[0], flat.sequences(3)[0]
    assert [s[:-64] for s in seq_t] == [s[:-64] for s in seq_f]
    assert any(s[-64:] != f[-64:] for s, f in zip(seq_t, seq_f, strict=True))
