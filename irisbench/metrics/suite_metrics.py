"""Image metrics beside a suite's protocol score: ``irisbench eval --metrics clip,fid,kid,pickscore,hpsv2``.

- ``clip``: per-image CLIP score of the image against its prompt, written into every record (``clip_score``)
  and averaged with a prompt-bootstrap CI in ``results.json``. Shapes world: the shipped shapes CLIP; open
  world: ``--clip-model`` / ``--clip-pretrained`` (weights must be on this machine). The scale is explicit.
- ``fid`` / ``kid``: distance between the run's images and reference images, with CLIP image-tower
  features (torchmetrics). Shapes world: the reference is a fresh rendering of a ground-truth scene for every
  (prompt, sample) of the run, from seeds the policy never sees, in the policy's look (a textures-world policy's
  references are shaded as its training images are); open world: ``--fid-reference DIR`` (PNG files).

Small samples: KID's subset size adapts to the sample unless given (``kid_subset_size``): min(100, n // 2)
with n = min(#real, #fake), so that the 100 subsets differ from each other (a subset of all n images would
give every subset the same value and a std of 0); the size used and the rule are recorded. FID from fewer than
``FID_MIN_IMAGES`` images per side is flagged ``fid_high_variance`` with a warning in the results: its
estimate is biased upward and varies a lot with the sample (and with n <= the feature dimension the
covariance is singular).
- ``pickscore`` / ``hpsv2``: preference-model scores (``irisbench.metrics.preference``), per image in every
  record under their names and averaged as ``clip`` is; models from ``--metric-option pickscore_model=FOLDER``
  and the like (local only), loaded when the metrics are set up, before any image is made.

``irisbench metrics RUN`` (``irisbench.evaluation.run_metrics``) (re)computes all of these on a
finished run folder from its saved images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irisbench.core.errors import UsageError

METRIC_NAMES = ("clip", "fid", "kid", "pickscore", "hpsv2")
PREFERENCE_METRICS = ("pickscore", "hpsv2")  # per-image record key = the name
CLIP_METRICS = ("clip", "fid", "kid")  # the metrics that read the CLIP model
KID_MAX_SUBSET = 100  # the subset size used when the sample allows it (torchmetrics' default is 1000)
KID_SUBSETS = 100
FID_MIN_IMAGES = 500  # below this many images per side an FID is flagged as high-variance


@dataclass
class MetricOptions:
    names: tuple[str, ...] = ()
    clip_model: str | None = None  # None: shapes-clip in the shapes world
    clip_pretrained: str | None = None
    clip_scale: str = "raw"
    fid_reference: str | None = None
    kid_subset_size: int | None = None  # None: min(KID_MAX_SUBSET, n // 2), see kid_subset_size_for
    device: str = "cpu"  # where the CLIP model runs (a resolved device: irisbench.core.devices.resolve_device)
    preference: dict[str, dict[str, Any]] = field(default_factory=dict)  # pickscore/hpsv2 -> load options


def read_png(path: Path) -> np.ndarray:
    """An RGB image from a PNG file; a file that is not a PNG or is truncated is a clear error, not a skip."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise UsageError(f"{path}: not a PNG file ({im.format})")
            im.load()
            return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError) as e:
        raise UsageError(f"{path}: unreadable image ({e})") from None


def kid_subset_size_for(n_real: int, n_fake: int, requested: int | None = None) -> tuple[int, str]:
    """(subset size, rule) for KID on ``n_real`` and ``n_fake`` images.

    ``requested`` is used as given (``fid.kid`` checks its range); None picks min(KID_MAX_SUBSET, n // 2),
    at least 2, with n = min(n_real, n_fake). Fewer than 2 images on a side is a clear error.
    """
    n = min(n_real, n_fake)
    if requested is not None:
        return int(requested), "given"
    if n < 2:
        from irisbench.metrics.fid import SampleSizeError

        raise SampleSizeError(f"KID needs at least 2 real and 2 generated images, got {n_real} real and "
                              f"{n_fake} generated")
    return max(2, min(KID_MAX_SUBSET, n // 2)), f"auto: min({KID_MAX_SUBSET}, n // 2) with n = {n}"


def fid_variance_note(n_real: int, n_fake: int, feature_dim: int | None = None) -> str | None:
    """A warning when an FID from this many images is high-variance, else None."""
    n = min(n_real, n_fake)
    if n >= FID_MIN_IMAGES and (feature_dim is None or n > feature_dim):
        return None
    note = (f"FID from {n_real} real and {n_fake} generated images is high-variance (below {FID_MIN_IMAGES} per "
            "side it is biased upward and changes a lot with the sample): compare it only with runs of the same "
            "size and features")
    if feature_dim is not None and n <= feature_dim:
        note += f"; with n <= the feature dimension ({feature_dim}) the covariance estimate is singular"
    return note


def check_scale_name(scale: str) -> str:
    from irisbench.metrics.clip_score import check_scale

    return check_scale(scale)


def parse_metric_names(spec: str | None) -> tuple[str, ...]:
    if not spec:
        return ()
    names = tuple(dict.fromkeys(x.strip() for x in spec.split(",") if x.strip()))
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown:
        raise UsageError(f"unknown metric(s) {unknown}; valid: {', '.join(METRIC_NAMES)}")
    return names


class SuiteMetrics:
    """Loads the CLIP model once; scores batches during generation and the whole run at the end."""

    def __init__(self, opts: MetricOptions, world: str, render_world: str = "shapes") -> None:
        self.opts, self.world = opts, world
        self.render_world = render_world  # the embedded world's look: FID's reference renders match it
        self._clip = None
        if any(n in CLIP_METRICS for n in opts.names) and world == "open" and opts.clip_model is None:
            raise UsageError("--metrics on an open-world policy needs --clip-model (and --clip-pretrained with "
                             "weights on this machine); the shapes CLIP only knows the shapes world")
        if ("fid" in opts.names or "kid" in opts.names) and world == "open" and not opts.fid_reference:
            raise UsageError("FID/KID for an open-world policy need --fid-reference DIR (reference PNG images)")
        from irisbench.metrics.preference import load_preference

        self.preference = {n: load_preference(n, opts.preference.get(n, {})) for n in opts.names
                           if n in PREFERENCE_METRICS}

    def per_image_keys(self) -> list[str]:
        """The record keys ``per_image`` fills."""
        return (["clip_score"] if "clip" in self.opts.names else []) + list(self.preference)

    @property
    def clip(self) -> Any:
        if self._clip is None:
            from irisbench.metrics.clip_score import load_clip

            self._clip = load_clip(self.opts.clip_model or "shapes-clip", self.opts.clip_pretrained,
                                   device=self.opts.device)
        return self._clip

    def describe(self) -> dict[str, Any]:
        from irisbench.metrics.clip_score import score_identity

        out: dict[str, Any] = {"names": list(self.opts.names)}
        if any(n in CLIP_METRICS for n in self.opts.names):
            out["clip"] = score_identity(self.clip, self.opts.clip_scale)
        return {**out, **{n: m.describe() for n, m in self.preference.items()}}

    def per_image(self, images: list[np.ndarray], prompts: list[str]) -> list[dict[str, float]]:
        out: list[dict[str, float]] = [{} for _ in images]
        if "clip" in self.opts.names:
            from irisbench.metrics.clip_score import clip_score

            values = clip_score(images, prompts, self.clip, scale=self.opts.clip_scale)
            if not np.all(np.isfinite(values)):
                raise UsageError("CLIP score is not finite for some images")
            for row, v in zip(out, values, strict=True):
                row["clip_score"] = float(v)
        for name, model in self.preference.items():
            values = model.score(images, prompts)
            if not np.all(np.isfinite(values)):
                raise UsageError(f"{name} is not finite for some images")
            for row, v in zip(out, values, strict=True):
                row[name] = float(v)
        return out

    def finalize(self, root: Path, records: list[dict], items: list[dict], seed: int) -> dict[str, Any]:
        from irisbench.core.stats import bootstrap_ci

        out: dict[str, Any] = {"identity": self.describe()}
        if "clip" in self.opts.names:
            by_prompt: dict[int, list[float]] = {}
            for r in records:
                by_prompt.setdefault(r["prompt_index"], []).append(r["clip_score"])
            values = list(by_prompt.values())
            lo, hi = bootstrap_ci(values, n_resamples=2000, seed=seed)
            out["clip"] = {"mean": float(np.mean([v for vs in values for v in vs])), "ci_low": lo, "ci_high": hi,
                           "scale": self.opts.clip_scale, "n_images": len(records)}
        for name in self.preference:
            from irisbench.metrics.preference import PREFERENCE_MODELS

            groups: dict[int, list[float]] = {}
            for r in records:
                groups.setdefault(r["prompt_index"], []).append(r[name])
            lo, hi = bootstrap_ci(list(groups.values()), n_resamples=2000, seed=seed)
            out[name] = {"mean": float(np.mean([r[name] for r in records])), "ci_low": lo, "ci_high": hi,
                         "formula": PREFERENCE_MODELS[name], "n_images": len(records)}
        if "fid" in self.opts.names or "kid" in self.opts.names:
            out.update(self._distances(root, records, items, seed))
        return out

    def _distances(self, root: Path, records: list[dict], items: list[dict], seed: int) -> dict[str, Any]:
        from irisbench.metrics.fid import fid, kid, make_feature_extractor

        missing = [r for r in records if not r.get("image") or not (root / r["image"]).is_file()]
        if missing:
            raise UsageError(f"FID/KID need every generated image on disk: {len(missing)} of {len(records)} are "
                             "missing (run without --no-save-images)")
        fake = [read_png(root / r["image"]) for r in records]
        real, source = self._reference(records, items, seed)
        features = make_feature_extractor("clip", clip=self.clip)
        out: dict[str, Any] = {"reference": {"source": source, "n_real": len(real), "n_fake": len(fake)}}
        if "fid" in self.opts.names:
            out["fid"] = fid(real, fake, features=features)
            note = fid_variance_note(len(real), len(fake), getattr(features, "num_features", None))
            out["fid_high_variance"] = note is not None
            out["fid_warning"] = note
        if "kid" in self.opts.names:
            size, rule = kid_subset_size_for(len(real), len(fake), self.opts.kid_subset_size)
            mean, std = kid(real, fake, features=features, subset_size=size, subsets=KID_SUBSETS, seed=seed)
            out["kid"] = {"mean": mean, "std": std, "subset_size": size, "subset_size_rule": rule,
                          "subsets": KID_SUBSETS}
        return out

    def _reference(self, records: list[dict], items: list[dict], seed: int) -> tuple[list[np.ndarray], str]:
        if self.opts.fid_reference:
            files = sorted(Path(self.opts.fid_reference).glob("*.png"))
            if not files:
                raise UsageError(f"--fid-reference {self.opts.fid_reference}: no PNG files")
            return [read_png(f) for f in files], str(self.opts.fid_reference)
        from irisbench.policies.base import derive_seed
        from irisbench.world.sampler import scene_for
        from irisbench.world.textures import render_world

        real = []
        for r in records:
            meta = items[r["prompt_index"]]
            meta = meta.get("metadata", meta)  # CompBench items carry their GenEval metadata
            rng = np.random.default_rng(derive_seed(seed, "fid-reference", r["prompt_index"], r["sample_index"]))
            scene = scene_for(meta, rng)
            # textures: shaded as the policy's training images are (shading drawn after the scene, same stream)
            real.append(render_world([scene], self.render_world, rng)[0])
        look = "" if self.render_world == "shapes" else f", {self.render_world} world"
        return real, f"ground-truth renders of the same prompts (held-out seeds{look})"
