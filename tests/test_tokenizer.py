"""The shapes patch tokenizer: lossless round trip on rendered scenes, save/load, bad input."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from irisbench.protocols.geneval import judge
from irisbench.world.detector import detect
from irisbench.world.prompts import build_splits
from irisbench.world.sampler import random_scene, scene_for
from irisbench.world.scene import render_batch, shape_mask
from irisbench.world.tokenizer import (
    FORMAT,
    PATCH_DIM,
    PatchTokenizer,
    TokenizerFileError,
    TokenizerInputError,
    fit_patch_tokenizer,
    from_patches,
    theoretical_patches,
    to_patches,
)
from irisbench.world.vocab import CANVAS, SHAPES, SIZES, TAGS


@pytest.fixture(scope="module")
def tok() -> PatchTokenizer:
    return fit_patch_tokenizer(n_scenes=3000, seed=0)


@pytest.fixture(scope="module")
def test_images() -> tuple[list[dict], np.ndarray]:
    test = build_splits(0)["test"]
    scenes = [scene_for(md, np.random.default_rng([7, i])) for i, md in enumerate(test)]
    return test, render_batch(scenes)


def test_patch_layout_row_major() -> None:
    img = np.zeros((1, CANVAS, CANVAS, 3), dtype=np.uint8)
    img[0, 4:8, 8:12] = 7  # patch row 1, column 2 -> index 1 * 8 + 2
    p = to_patches(img)
    assert p.shape == (1, 64, PATCH_DIM)
    assert (p[0, 10] == 7).all() and p[0, np.arange(64) != 10].max() == 0
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, CANVAS, CANVAS, 3), dtype=np.uint8)
    np.testing.assert_array_equal(from_patches(to_patches(x)), x)


def test_fitted_codebook_is_the_exact_patch_set(tok: PatchTokenizer) -> None:
    theory = theoretical_patches()
    # 3 flat backgrounds + for each distinct 4x4 mask piece of the 10 shapes at sizes 8 and 12: 10 colors
    # if full, 10 colors x 3 backgrounds if partial, none if empty (counted independently of
    # theoretical_patches; the first, four-shape world had 763, as its feasibility prototype measured)
    pieces = {shape_mask(s, z)[y:y + 4, x:x + 4].tobytes() for s in SHAPES for z in SIZES
              for y in range(0, z, 4) for x in range(0, z, 4)}
    full, empty = np.ones((4, 4), bool).tobytes(), np.zeros((4, 4), bool).tobytes()
    assert len(theory) == 3 + sum(10 if p == full else 30 for p in pieces - {empty}) == 1513
    assert tok.codebook_size == tok.distinct_patches == 1513
    assert {bytes(r) for r in tok.codebook} == {bytes(r) for r in theory}
    assert tok.num_tokens == 64 and tok.codebook.dtype == np.uint8 and tok.codebook.shape == (1513, PATCH_DIM)
    assert (np.diff(tok.counts) <= 0).all()  # most frequent first
    assert len(np.unique(tok.codebook[:3], axis=0)) == 3 and (tok.codebook[0] == tok.codebook[0][0]).all()


def test_round_trip_lossless_and_verdicts_agree(tok: PatchTokenizer, test_images) -> None:
    mds, images = test_images
    codes = tok.encode(images)
    assert codes.dtype == np.int64 and codes.shape == (len(images), 64)
    recon = tok.decode(codes)
    exact = float((recon == images).all(axis=-1).mean())
    agree = {t: [] for t in TAGS}
    for md, a, b in zip(mds, images, recon, strict=True):
        agree[md["tag"]].append(judge(md, detect(a)).correct == judge(md, detect(b)).correct)
    rate = sum(sum(v) for v in agree.values()) / len(mds)
    print(f"\ntokenizer K={tok.codebook_size}: exact pixels {exact:.4f}, verdict agreement {rate:.4f}")
    assert exact == 1.0 and rate >= 0.99


def test_truncated_codebook_uses_nearest_code() -> None:
    small = fit_patch_tokenizer(n_scenes=300, seed=1, max_codes=40)
    assert small.codebook_size == 40 and small.distinct_patches > 40
    rng = np.random.default_rng(3)
    images = render_batch([random_scene(rng) for _ in range(16)])
    codes = small.encode(images)
    patches = to_patches(images).reshape(-1, PATCH_DIM).astype(np.int64)
    d2 = ((patches[:, None, :] - small.codebook[None].astype(np.int64)) ** 2).sum(-1)
    np.testing.assert_array_equal(d2[np.arange(len(patches)), codes.ravel()], d2.min(1))
    # exact patches keep their own code
    hit = d2.min(1) == 0
    assert hit.any() and (~hit).any()
    np.testing.assert_array_equal(codes.ravel()[hit], d2.argmin(1)[hit])


def test_fit_is_deterministic() -> None:
    a = fit_patch_tokenizer(n_scenes=200, seed=5)
    b = fit_patch_tokenizer(n_scenes=200, seed=5)
    np.testing.assert_array_equal(a.codebook, b.codebook)
    np.testing.assert_array_equal(a.counts, b.counts)


def test_save_load_round_trip(tok: PatchTokenizer, tmp_path: Path) -> None:
    path = tmp_path / "tok.safetensors"
    tok.save(path)
    back = PatchTokenizer.load(path)
    np.testing.assert_array_equal(back.codebook, tok.codebook)
    np.testing.assert_array_equal(back.counts, tok.counts)
    assert back.distinct_patches == tok.distinct_patches
    raw = path.read_bytes()  # a safetensors file: u64 header length, JSON header, raw tensor bytes
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert header["codebook"]["dtype"] == "U8" and header["codebook"]["shape"] == [1513, PATCH_DIM]
    assert header["__metadata__"]["format"] == FORMAT


def _write_header_file(path: Path, header: dict, body: bytes = b"") -> None:
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + body)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PatchTokenizer.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(TokenizerFileError, match="garbage.safetensors: not a readable safetensors"):
        PatchTokenizer.load(bad)
    meta = {"format": FORMAT, "patch": "4", "canvas": "32"}
    f = tmp_path / "wrong_format.safetensors"
    save_file({"codebook": np.zeros((3, PATCH_DIM), np.uint8)}, str(f), metadata={**meta, "format": "x"})
    with pytest.raises(TokenizerFileError, match="wrong_format.safetensors: metadata 'format'"):
        PatchTokenizer.load(f)
    f = tmp_path / "wrong_patch.safetensors"
    save_file({"codebook": np.zeros((3, PATCH_DIM), np.uint8)}, str(f), metadata={**meta, "patch": "8"})
    with pytest.raises(TokenizerFileError, match="patch 8"):
        PatchTokenizer.load(f)
    f = tmp_path / "no_codebook.safetensors"
    save_file({"counts": np.zeros(3, np.int64)}, str(f), metadata=meta)
    with pytest.raises(TokenizerFileError, match="missing tensor 'codebook'"):
        PatchTokenizer.load(f)
    f = tmp_path / "shape.safetensors"
    save_file({"codebook": np.zeros((3, 12), np.uint8)}, str(f), metadata=meta)
    with pytest.raises(TokenizerFileError, match=r"'codebook' must be uint8 \(K>=1, 48\), got uint8 \(3, 12"):
        PatchTokenizer.load(f)
    f = tmp_path / "dtype.safetensors"
    save_file({"codebook": np.zeros((3, PATCH_DIM), np.float32)}, str(f), metadata=meta)
    with pytest.raises(TokenizerFileError, match="float32"):
        PatchTokenizer.load(f)
    f = tmp_path / "counts.safetensors"
    cb = np.arange(2 * PATCH_DIM, dtype=np.uint8).reshape(2, PATCH_DIM)
    save_file({"codebook": cb, "counts": np.zeros(5, np.int64)}, str(f), metadata=meta)
    with pytest.raises(TokenizerFileError, match=r"'counts' must be int64 \(2,\)"):
        PatchTokenizer.load(f)
    f = tmp_path / "dup.safetensors"
    save_file({"codebook": np.zeros((2, PATCH_DIM), np.uint8)}, str(f), metadata=meta)
    with pytest.raises(TokenizerFileError, match="duplicate"):
        PatchTokenizer.load(f)
    f = tmp_path / "truncated.safetensors"
    _write_header_file(f, {"codebook": {"dtype": "U8", "shape": [3, PATCH_DIM], "data_offsets": [0, 144]}})
    with pytest.raises(TokenizerFileError, match="truncated.safetensors"):
        PatchTokenizer.load(f)


def test_encode_decode_input_errors(tok: PatchTokenizer) -> None:
    with pytest.raises(TokenizerInputError, match="uint8"):
        tok.encode(np.zeros((1, CANVAS, CANVAS, 3), np.float32))
    with pytest.raises(TokenizerInputError, match=r"\(B, 32, 32, 3\)"):
        tok.encode(np.zeros((CANVAS, CANVAS, 3), np.uint8))
    with pytest.raises(TokenizerInputError, match=r"\[0, 1513\)"):
        tok.decode(np.full((1, 64), 1513))
    with pytest.raises(TokenizerInputError, match=r"\(B, 64\)"):
        tok.decode(np.zeros((1, 63), np.int64))
    with pytest.raises(TokenizerInputError, match="integer"):
        tok.decode(np.zeros((1, 64), np.float32))
    assert tok.decode(np.zeros((0, 64), np.int64)).shape == (0, CANVAS, CANVAS, 3)
