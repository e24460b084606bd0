"""The shapes world's image tokenizer: 32x32 RGB <-> 64 discrete codes (one per 4x4 patch).

Design. Objects sit on the 4-px patch grid with sides of 8 or 12 px, so every patch of a rendered image
is either flat background or an exact piece of one shape mask in one palette color over one background
gray: a finite set (``theoretical_patches``). A codebook that simply lists the patches seen when fitting,
most frequent first, is therefore lossless on rendered scenes once it has seen them all (the patch set
is small, under a thousand, well within ``max_codes`` = 1024), and decoding is a table lookup. No k-means:
centroids of different patches blur the flat backgrounds and shape edges that the exact detector
judges (docs/shapes-world.md: k-means at K=1024 kept the GenEval verdict on only 48-89% of scenes,
the exact grid codebook on 100%).

- 64 tokens per image (<= 256), row-major over the 8x8 patch grid.
- ``encode`` finds exact patches with a vectorised sorted-bytes lookup; a patch never seen in fitting
  (only possible for images not rendered by ``scene.render`` or a codebook fitted on few scenes) maps
  to its nearest code in L2, so ``decode(encode(x))`` is then an approximation.
- Codes are ordered by fitting frequency (code 0 is the most common patch, a background).
- Stored as a safetensors file (``codebook`` uint8 (K, 48), ``counts`` int64 (K,)), never pickle.

Departure from IRIS/Janus-Pro: their VQ tokenizer is learned (16x downsampling, 16384 codes, 576 tokens
at 384 px); this one is fitted by counting, which is exact for this synthetic world.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from irisbench.core.errors import IrisbenchError, UsageError
from irisbench.world.textures import SHADES, WORLDS, check_world, render_world
from irisbench.world.vocab import BACKGROUNDS, CANVAS, COLORS, GRID, PALETTE, PATCH, SHAPES, SIZES

PATCH_DIM = PATCH * PATCH * 3
FORMAT = "irisbench.patch_tokenizer.v1"


class TokenizerFileError(IrisbenchError, ValueError):
    """A tokenizer file that is not a valid patch-tokenizer safetensors file."""


class TokenizerInputError(IrisbenchError, ValueError):
    """Images or codes of the wrong shape, dtype or range."""


def _void(patches: np.ndarray) -> np.ndarray:
    """(N, PATCH_DIM) uint8 -> (N,) opaque byte strings, comparable and sortable."""
    return np.ascontiguousarray(patches).view(np.dtype((np.void, PATCH_DIM))).ravel()


def to_patches(images: np.ndarray) -> np.ndarray:
    """uint8 (B, CANVAS, CANVAS, 3) -> (B, GRID*GRID, PATCH_DIM), patches row-major."""
    b = images.shape[0]
    p = images.reshape(b, GRID, PATCH, GRID, PATCH, 3).transpose(0, 1, 3, 2, 4, 5)
    return p.reshape(b, GRID * GRID, PATCH_DIM)


def from_patches(patches: np.ndarray) -> np.ndarray:
    """Inverse of ``to_patches``."""
    b = patches.shape[0]
    p = patches.reshape(b, GRID, GRID, PATCH, PATCH, 3).transpose(0, 1, 3, 2, 4, 5)
    return np.ascontiguousarray(p.reshape(b, CANVAS, CANVAS, 3))


class PatchTokenizer:
    """Codebook of 4x4 RGB patches; ``codebook[k]`` is patch k flattened (row, column, channel)."""

    num_tokens: int = GRID * GRID

    def __init__(self, codebook: np.ndarray, counts: np.ndarray | None = None) -> None:
        codebook = np.asarray(codebook)
        if codebook.dtype != np.uint8 or codebook.ndim != 2 or codebook.shape[1] != PATCH_DIM \
                or codebook.shape[0] < 1:
            raise TokenizerInputError(
                f"codebook must be uint8 (K>=1, {PATCH_DIM}), got {codebook.dtype} {codebook.shape}")
        keys = _void(codebook)
        if len(np.unique(keys)) != len(keys):
            raise TokenizerInputError("codebook has duplicate patches")
        self.codebook = np.ascontiguousarray(codebook)
        self.codebook.setflags(write=False)
        self.counts = (np.zeros(len(codebook), dtype=np.int64) if counts is None
                       else np.asarray(counts, dtype=np.int64))
        if self.counts.shape != (len(codebook),):
            raise TokenizerInputError(f"counts must have shape ({len(codebook)},), got {self.counts.shape}")
        # distinct patches seen when fitting (>= codebook_size; more means the codebook is lossy)
        self.distinct_patches: int | None = None
        self.world = "shapes"  # the world whose renders it was fitted on (irisbench.world.textures.WORLDS)
        self._order = np.argsort(keys)
        self._sorted_keys = keys[self._order]
        self._cb_int = self.codebook.astype(np.int64)
        self._cb_sq = (self._cb_int**2).sum(1)

    @property
    def codebook_size(self) -> int:
        return int(self.codebook.shape[0])

    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, 32, 32, 3) images -> int64 (B, 64) codes (nearest code for unseen patches)."""
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
                or images.shape[1:] != (CANVAS, CANVAS, 3):
            raise TokenizerInputError(f"encode expects uint8 (B, {CANVAS}, {CANVAS}, 3) images, got "
                                      f"{getattr(images, 'dtype', type(images))} "
                                      f"{getattr(images, 'shape', '')}")
        patches = to_patches(images).reshape(-1, PATCH_DIM)
        keys = _void(patches)
        pos = np.minimum(np.searchsorted(self._sorted_keys, keys), len(self._sorted_keys) - 1)
        hit = self._sorted_keys[pos] == keys
        codes = self._order[pos].astype(np.int64)
        if not hit.all():
            uniq, inv = np.unique(keys[~hit], return_inverse=True)
            q = uniq.view(np.uint8).reshape(-1, PATCH_DIM).astype(np.int64)
            d2 = (q**2).sum(1)[:, None] - 2 * q @ self._cb_int.T + self._cb_sq[None]
            codes[~hit] = d2.argmin(1)[inv.ravel()]
        return codes.reshape(images.shape[0], self.num_tokens)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """int (B, 64) codes -> uint8 (B, 32, 32, 3) images."""
        codes = np.asarray(codes)
        if not np.issubdtype(codes.dtype, np.integer) or codes.ndim != 2 or codes.shape[1] != self.num_tokens:
            raise TokenizerInputError(f"decode expects integer (B, {self.num_tokens}) codes, got "
                                      f"{codes.dtype} {codes.shape}")
        if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise TokenizerInputError(f"codes must lie in [0, {self.codebook_size}), got range "
                                      f"[{codes.min()}, {codes.max()}]")
        return from_patches(self.codebook[codes])

    def save(self, path: str | Path) -> None:
        """Write a safetensors file with ``codebook`` and ``counts``."""
        from safetensors.numpy import save_file

        meta = {"format": FORMAT, "patch": str(PATCH), "canvas": str(CANVAS), "world": self.world}
        if self.distinct_patches is not None:
            meta["distinct_patches"] = str(self.distinct_patches)
        save_file({"codebook": np.ascontiguousarray(self.codebook), "counts": self.counts}, str(path),
                  metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> PatchTokenizer:
        """Read a file written by ``save``; raises ``TokenizerFileError`` naming the file and field."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist")
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise TokenizerFileError(f"{path}: not a readable safetensors file ({e})") from None
        if meta.get("format") != FORMAT:
            raise TokenizerFileError(f"{path}: metadata 'format' is {meta.get('format')!r}, "
                                     f"expected {FORMAT!r}")
        if meta.get("patch") != str(PATCH) or meta.get("canvas") != str(CANVAS):
            raise TokenizerFileError(f"{path}: fitted for patch {meta.get('patch')} / canvas "
                                     f"{meta.get('canvas')}, this world uses patch {PATCH} / canvas {CANVAS}")
        cb = tensors.get("codebook")
        if cb is None:
            raise TokenizerFileError(f"{path}: missing tensor 'codebook'")
        if cb.dtype != np.uint8 or cb.ndim != 2 or cb.shape[1] != PATCH_DIM or cb.shape[0] < 1:
            raise TokenizerFileError(f"{path}: tensor 'codebook' must be uint8 (K>=1, {PATCH_DIM}), got "
                                     f"{cb.dtype} {cb.shape}")
        counts = tensors.get("counts")
        if counts is not None and (counts.dtype != np.int64 or counts.shape != (cb.shape[0],)):
            raise TokenizerFileError(f"{path}: tensor 'counts' must be int64 ({cb.shape[0]},), got "
                                     f"{counts.dtype} {counts.shape}")
        try:
            tok = cls(cb, counts)
        except TokenizerInputError as e:
            raise TokenizerFileError(f"{path}: {e}") from None
        if meta.get("distinct_patches", "").isdigit():
            tok.distinct_patches = int(meta["distinct_patches"])
        world = meta.get("world", "shapes")  # files from before the textures world are shapes-world files
        if world not in WORLDS:
            raise TokenizerFileError(f"{path}: metadata 'world' is {world!r}, expected one of {', '.join(WORLDS)}")
        tok.world = world
        return tok


def theoretical_patches() -> np.ndarray:
    """Every distinct patch a grid-aligned rendered scene can contain, uint8 (N, PATCH_DIM).

    Flat backgrounds plus, for each shape, size, patch cell of its box, color and background, that
    piece of the mask. Used to check a fitted codebook's coverage.
    """
    from irisbench.world.scene import shape_mask

    out = []
    for bg in BACKGROUNDS:
        bg_px = np.array(bg, dtype=np.uint8)
        out.append(np.broadcast_to(bg_px, (PATCH, PATCH, 3)).reshape(-1))
        for shape in SHAPES:
            for size in SIZES:
                m = shape_mask(shape, size)
                for py in range(0, size, PATCH):
                    for px in range(0, size, PATCH):
                        piece = m[py:py + PATCH, px:px + PATCH]
                        for c in COLORS:
                            p = np.where(piece[..., None], np.array(PALETTE[c], np.uint8), bg_px)
                            out.append(p.astype(np.uint8).reshape(-1))
    arr = np.stack(out)
    return np.unique(arr, axis=0)


def theoretical_textured_patches() -> np.ndarray:
    """Every distinct patch a rendered textures-world scene can contain, uint8 (N, 48): each shapes-world
    patch under each shade."""
    flat = theoretical_patches().astype(np.int16)
    out = np.concatenate([np.clip(flat + s, 0, 255) for s in SHADES]).astype(np.uint8)
    return np.unique(out, axis=0)


def fit_patch_tokenizer(n_scenes: int = 20000, seed: int = 0, max_codes: int = 2048,
                        world: str = "shapes") -> PatchTokenizer:
    """Count the patches of ``n_scenes`` rendered scenes and keep the ``max_codes`` most frequent.

    Half the scenes satisfy train-split prompts (cycled in a seeded order), half are ``random_scene``.
    Ties in frequency are broken by the patch bytes, so the result is deterministic for ``seed``. In the
    shapes world every patch of ``theoretical_patches`` is kept (the unseen ones last, count 0) when
    ``max_codes`` allows, so the codebook is lossless however few scenes were counted.
    ``world="textures"`` renders with per-patch shading (``irisbench.world.textures``): more distinct
    patches than ``max_codes``, so the codebook is lossy (rare patches decode to their nearest code).
    """
    from irisbench.world.prompts import build_splits
    from irisbench.world.sampler import random_scene, scene_for

    check_world(world)
    shading = np.random.default_rng([seed, 0x7E27])  # its own stream: the scenes are the shapes world's

    if n_scenes < 1 or max_codes < 1:
        raise UsageError(f"n_scenes and max_codes must be positive, got {n_scenes}, {max_codes}")
    rng = np.random.default_rng(seed)
    train = build_splits(seed)["train"]
    order = rng.permutation(len(train))
    n_prompted = n_scenes // 2
    scenes = [scene_for(train[order[i % len(train)]], rng) for i in range(n_prompted)]
    scenes += [random_scene(rng) for _ in range(n_scenes - n_prompted)]
    keys = np.empty(0, dtype=np.dtype((np.void, PATCH_DIM)))
    counts = np.empty(0, dtype=np.int64)
    chunk = 4096
    for start in range(0, len(scenes), chunk):  # bounded memory: merge per-chunk unique counts
        images = render_world(scenes[start:start + chunk], world, shading)
        k, c = np.unique(_void(to_patches(images).reshape(-1, PATCH_DIM)),
                         return_counts=True)
        keys, inv = np.unique(np.concatenate([keys, k]), return_inverse=True)
        merged = np.zeros(len(keys), dtype=np.int64)
        np.add.at(merged, inv.ravel(), np.concatenate([counts, c]))
        counts = merged
    if world == "shapes":  # lossless by construction: patches no fitted scene showed join with count 0
        theory = _void(theoretical_patches())
        unseen = theory[~np.isin(theory, keys)]
        keys = np.concatenate([keys, unseen])
        counts = np.concatenate([counts, np.zeros(len(unseen), dtype=np.int64)])
        order = np.argsort(keys, kind="stable")
        keys, counts = keys[order], counts[order]
    # keys are sorted by bytes; a stable sort on -count keeps byte order among ties
    rank = np.argsort(-counts, kind="stable")[:max_codes]
    codebook = keys[rank].view(np.uint8).reshape(-1, PATCH_DIM).copy()
    tok = PatchTokenizer(codebook, counts[rank])
    tok.distinct_patches = len(keys)
    tok.world = world
    return tok
