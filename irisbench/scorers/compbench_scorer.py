"""The open-world T2I-CompBench scorer ("compbench-real"): real perception feeding the official rules.

Perception comes from ``irisbench.scorers.compbench_real`` (BLIP-VQA, an OWLv2 open-vocabulary detector, CLIP
cosine); the category rules are the pure functions of ``irisbench.protocols.compbench`` (see
docs/protocols.md §2). Per category:

- color / shape / texture: BLIP-VQA on ``vqa_questions(prompt)`` -> ``vqa_phrase_score`` ->
  ``blip_vqa_image_score`` (product over the 8 phrase slots, 4 decimals);
- spatial: the detector queried with the two names of ``spatial_objects(prompt)`` -> ``unidet_2d_score``
  (a prompt with no object parse scores 0, as the official rule, with a reason);
- numeracy (++): the detector queried with the names of ``numeracy_targets(prompt)`` -> ``numeracy_score``;
- non_spatial: the raw CLIP cosine of the image and ``clip_text(prompt)`` (may in principle be below 0);
- complex: ``three_in_one`` of the BLIP attribute score, the complex-mode 2D spatial score and the CLIP cosine
  with ``clip_text(prompt, complex=True)``; which formula applies comes from the item's ``complex_kind``
  ("spatial" | "action" | "other", set by ``irisbench.suites`` from T2I-CompBench's subset files);
- 3d_spatial (++): not supported (needs a MiDaS depth model); raises ``UnsupportedCategoryError``.

All perception of one ``score`` call is batched: one BLIP call for every question of every BLIP-scored image
(color, shape, texture and the attribute part of complex), one detector call, one CLIP call. Models are loaded
lazily, once, and only when a category that needs them is scored (a color-only run never loads the detector
or CLIP).

Departures from the official pipeline, all deliberate:

- **OWLv2 replaces UniDet** (whose detectron2 build and weights are not available): the detector is queried
  with the object names themselves, a box's label is its best query, and detections with score <=
  ``detector_threshold`` (default 0.1, OWL's usual range) are dropped, in place of UniDet's 0.5
  ``SCORE_THRESH_TEST``; the rules get the same threshold. OWLv2 scores sit lower than UniDet's, and the 2D
  rule's 0.25*s1 + 0.25*s2 + 0.5*pos with its "< 0.5 -> 0" cut was tuned on UniDet scores, so **spatial,
  numeracy and the spatial part of complex differ from official numbers**; they are comparable between
  models scored here, not with published tables.
- **BLIP comes from HF transformers** (``Salesforce/blip-vqa-capfilt-large``, at the checkpoint's own image
  size), not the original ``model_base_vqa_capfilt_large.pth`` at 480 px; unverified against the original.
- CLIP is open_clip ViT-B-32/openai (the same weights as OpenAI ``clip``).
- Boxes: UniDet saw the image resized by torchvision ``Resize(size=479, max_size=480)``, and the rules' pixel
  constants (150 px, ...) are in that frame. OWLv2 boxes (image pixels) are scaled into that frame before
  the rules (``to_unidet_frame``); the ``detections`` returned keep image-pixel boxes.
- A NaN or infinite value from any model raises ``PerceptionError`` instead of becoming a silent 0; a numeracy
  prompt the official parser cannot handle raises ``PromptParseError`` before any model is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from irisbench.core.errors import IrisbenchError, UsageError
from irisbench.protocols import compbench as cb
from irisbench.scorers.compbench_real import DEFAULT_BLIP, DEFAULT_OWL, BoxDetection
from irisbench.scorers.geneval_real import PerceptionError, check_image

UNIDET_SHORT_SIDE = 479  # UniDet_eval/experts/model_bank.py: transforms.Resize(size=479, max_size=480)
UNIDET_MAX_SIDE = 480
BLIP_CATEGORIES = frozenset({"color", "shape", "texture", "complex"})
DETECTOR_CATEGORIES = frozenset({"spatial", "numeracy", "complex"})
CLIP_CATEGORIES = frozenset({"non_spatial", "complex"})
COMPLEX_KINDS = ("spatial", "action", "other")
SUPPORTED_CATEGORIES = tuple(c for c in cb.CATEGORIES if c != "3d_spatial")


class UnsupportedCategoryError(IrisbenchError, ValueError):
    """A T2I-CompBench category this scorer cannot score (3d_spatial needs a depth model)."""


# ------------------------------------------------------------------------------------------- box frame


def unidet_frame_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) of an image after torchvision ``Resize(size=479, max_size=480)``, UniDet's input frame.

    The short side goes to 479 and the long side to ``int(479 * long / short)``; if that exceeds 480, the long
    side becomes 480 and the short side ``int(480 * 479 / long')`` (torchvision's own arithmetic).
    """
    if height < 1 or width < 1:
        raise UsageError(f"image size must be positive, got {height}x{width}")
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = UNIDET_SHORT_SIDE, int(UNIDET_SHORT_SIDE * long / short)
    if new_long > UNIDET_MAX_SIDE:
        new_short, new_long = int(UNIDET_MAX_SIDE * new_short / new_long), UNIDET_MAX_SIDE
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    return new_h, new_w


def to_unidet_frame(detections: Sequence[BoxDetection], height: int, width: int) -> list[BoxDetection]:
    """Detections with (x1, y1, x2, y2) scaled from a ``height`` x ``width`` image to ``unidet_frame_size``."""
    new_h, new_w = unidet_frame_size(height, width)
    sx, sy = new_w / width, new_h / height
    return [BoxDetection(d.label, (d.box[0] * sx, d.box[1] * sy, d.box[2] * sx, d.box[3] * sy), d.score)
            for d in detections]


# ---------------------------------------------------------------------------------------------- helpers


@dataclass
class _Plan:
    """What one item needs from perception, and where its answers land."""

    category: str
    prompt: str
    height: int
    width: int
    questions: list[str] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)  # detector queries; empty = no detector call
    objects: tuple[str, str] | None = None
    targets: list[tuple[str, int]] = field(default_factory=list)
    clip_text: str | None = None
    complex_kind: str | None = None
    answers: list[tuple[float, float]] = field(default_factory=list)
    detections: list[BoxDetection] = field(default_factory=list)
    cosine: float | None = None


def _unique(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _detection_json(det: BoxDetection) -> dict[str, Any]:
    return {"label": str(det.label), "box": [float(v) for v in det.box], "score": float(det.score)}


class _Slot:
    """One perception model: injected (an instance, or a zero-argument factory) or loaded on first use."""

    def __init__(self, what: str, method: str, given: Any, loader: Callable[[], Any]) -> None:
        if given is not None and not hasattr(given, method) and not callable(given):
            raise TypeError(f"{what}: expected an object with .{method}() or a factory returning one, got {given!r}")
        self.what, self.method = what, method
        self.instance = given if given is not None and hasattr(given, method) else None
        self.factory = given if self.instance is None and given is not None else loader
        self.injected = given is not None

    def get(self) -> Any:
        if self.instance is None:
            made = self.factory()
            if not hasattr(made, self.method):
                raise TypeError(f"{self.what}: the factory returned {made!r}, which has no .{self.method}()")
            self.instance = made
        return self.instance

    def describe(self) -> Any:
        if self.instance is None:
            return "not loaded yet"
        return self.instance.describe() if hasattr(self.instance, "describe") else type(self.instance).__name__


# ----------------------------------------------------------------------------------------------- scorer


class CompBenchScorer:
    """T2I-CompBench(++) scorer for real images: BLIP-VQA, OWLv2 and CLIP feeding the official rules."""

    name = "compbench-real"

    def __init__(self, blip: str = DEFAULT_BLIP, detector: str = DEFAULT_OWL, clip_model: str = "ViT-B-32",
                 clip_pretrained: str | None = "openai", device: str | None = None, *,
                 detector_threshold: float = 0.1, blip_vqa: Any = None, open_vocab: Any = None,
                 clip_cosine: Any = None) -> None:
        """Nothing is loaded here. ``blip_vqa`` / ``open_vocab`` / ``clip_cosine`` take precedence over the
        model ids: each may be a ready object (with ``yes_no_prob`` / ``detect`` / ``cosine``) or a
        zero-argument factory returning one, called on first use."""
        if not (_finite(detector_threshold) and 0.0 <= float(detector_threshold) < 1.0):
            raise UsageError(f"detector_threshold must be in [0, 1), got {detector_threshold!r}")
        self.blip_id, self.detector_id = str(blip), str(detector)
        self.clip_model, self.clip_pretrained = clip_model, clip_pretrained
        self.device = device
        self.detector_threshold = float(detector_threshold)
        self._blip = _Slot("blip_vqa", "yes_no_prob", blip_vqa, self._load_blip)
        self._detector = _Slot("open_vocab", "detect", open_vocab, self._load_detector)
        self._clip = _Slot("clip_cosine", "cosine", clip_cosine, self._load_clip)

    # -- lazy model loading -------------------------------------------------------------------------------
    def _load_blip(self) -> Any:
        from irisbench.scorers import compbench_real

        return compbench_real.BlipVQA(self.blip_id, device=self.device)

    def _load_detector(self) -> Any:
        from irisbench.scorers import compbench_real

        return compbench_real.OpenVocabDetector(self.detector_id, device=self.device,
                                                threshold=self.detector_threshold)

    def _load_clip(self) -> Any:
        from irisbench.scorers import compbench_real

        return compbench_real.ClipCosine.from_open_clip(self.clip_model, self.clip_pretrained, device=self.device)

    def describe(self) -> dict[str, Any]:
        """Model ids (and, once loaded, the models' own descriptions), threshold, rules, substitutions."""
        language = "spacy en_core_web_sm" if cb.spacy_available() else "rule-based stand-in for spaCy"
        return {
            "name": self.name,
            "blip": {"model": None if self._blip.injected else self.blip_id, "injected": self._blip.injected,
                     "loaded": self._blip.describe()},
            "detector": {"model": None if self._detector.injected else self.detector_id,
                         "injected": self._detector.injected, "loaded": self._detector.describe(),
                         "threshold": self.detector_threshold},
            "clip": {"model": None if self._clip.injected else f"open_clip {self.clip_model} ({self.clip_pretrained})",
                     "injected": self._clip.injected, "loaded": self._clip.describe()},
            "device": self.device or "auto",
            "rules": {c: cb.CATEGORIES[c].rule for c in SUPPORTED_CATEGORIES},
            "rules_module": "irisbench.protocols.compbench (official T2I-CompBench rules)",
            "language": language,
            "box_frame": f"detector boxes scaled to UniDet's input frame (Resize(size={UNIDET_SHORT_SIDE}, "
                         f"max_size={UNIDET_MAX_SIDE})) before the rules; returned boxes are in image pixels",
            "substitutions": [
                "OWLv2 replaces UniDet (threshold above, not 0.5): spatial, numeracy and complex differ from "
                "official numbers",
                "BLIP-VQA from HF transformers, not the original checkpoint at 480 px (unverified against it)",
                "CLIP: open_clip ViT-B-32/openai in place of OpenAI clip ViT-B/32 (same weights)",
            ],
            "unsupported": {"3d_spatial": "needs a MiDaS depth model"},
        }

    # -- scoring ------------------------------------------------------------------------------------------
    def _plan(self, index: int, image: Any, item: Any) -> _Plan:
        where = f"item {index}"
        if not isinstance(item, dict):
            raise UsageError(f"{where}: expected a dict with 'tag' and 'rule_prompt', got {type(item).__name__}")
        category = item.get("tag")
        if category == "3d_spatial":
            raise UnsupportedCategoryError(
                f"{where}: T2I-CompBench category '3d_spatial' is not supported by {self.name}: it needs a MiDaS "
                "depth model, which is not wired in; score the other categories or drop 3d_spatial"
            )
        if category not in SUPPORTED_CATEGORIES:
            raise UsageError(f"{where}: field 'tag' must be a T2I-CompBench category, one of "
                             f"{list(SUPPORTED_CATEGORIES)}; got {category!r}")
        prompt = item.get("rule_prompt", item.get("prompt"))
        if not isinstance(prompt, str) or not prompt.strip():
            raise UsageError(f"{where}: field 'rule_prompt' (or 'prompt') must be a non-empty string, got {prompt!r}")
        height, width = check_image(image, f"image {index}").shape[:2]
        plan = _Plan(category, prompt, int(height), int(width))
        if category in BLIP_CATEGORIES:
            plan.questions = cb.vqa_questions(prompt)
        if category in ("spatial", "complex"):
            plan.objects = cb.spatial_objects(prompt, complex=category == "complex")
            plan.queries = _unique(plan.objects) if plan.objects is not None else []
        if category == "numeracy":
            try:
                plan.targets = cb.numeracy_targets(prompt)
            except cb.PromptParseError as err:
                raise cb.PromptParseError(f"{where} (numeracy): {err}") from None
            plan.queries = _unique([name for name, _ in plan.targets])
        if category in CLIP_CATEGORIES:
            plan.clip_text = cb.clip_text(prompt, complex=category == "complex")
        if category == "complex":
            kind = item.get("complex_kind")
            if kind not in COMPLEX_KINDS:
                raise UsageError(f"{where}: complex items need field 'complex_kind' in {list(COMPLEX_KINDS)} "
                                 f"(which 3-in-1 formula applies), got {kind!r}")
            plan.complex_kind = kind
        return plan

    def _ask_blip(self, images: Sequence[Any], plans: list[_Plan]) -> None:
        slots = [(i, q) for i, plan in enumerate(plans) for q in plan.questions]
        if not slots:
            return
        pairs = list(self._blip.get().yes_no_prob([images[i] for i, _ in slots], [q for _, q in slots]))
        if len(pairs) != len(slots):
            raise PerceptionError(f"BLIP-VQA returned {len(pairs)} answers for {len(slots)} questions")
        for (i, question), pair in zip(slots, pairs, strict=True):
            p_yes, p_no = pair
            if not (_finite(p_yes) and _finite(p_no)) or float(p_yes) < 0 or float(p_no) < 0 \
                    or float(p_yes) + float(p_no) <= 0:
                raise PerceptionError(f"item {i}: BLIP-VQA gave P(yes)={p_yes!r}, P(no)={p_no!r} for {question!r}; "
                                      "refusing to turn it into a score")
            plans[i].answers.append((float(p_yes), float(p_no)))

    def _ask_detector(self, images: Sequence[Any], plans: list[_Plan]) -> None:
        rows = [i for i, plan in enumerate(plans) if plan.queries]
        if not rows:
            return
        found = list(self._detector.get().detect([images[i] for i in rows], [plans[i].queries for i in rows],
                                                 threshold=self.detector_threshold))
        if len(found) != len(rows):
            raise PerceptionError(f"detector returned {len(found)} results for {len(rows)} images")
        for i, dets in zip(rows, found, strict=True):
            checked = []
            for k, det in enumerate(dets):
                box = tuple(det.box)
                if not (_finite(det.score) and len(box) == 4 and all(_finite(v) for v in box)):
                    raise PerceptionError(f"item {i}: detection {k} ({det.label!r}) has score {det.score!r}, box "
                                          f"{box!r}: not finite; refusing to turn it into a score")
                checked.append(BoxDetection(str(det.label), tuple(float(v) for v in box), float(det.score)))
            plans[i].detections = checked

    def _ask_clip(self, images: Sequence[Any], plans: list[_Plan]) -> None:
        rows = [i for i, plan in enumerate(plans) if plan.clip_text is not None]
        if not rows:
            return
        cosines = list(self._clip.get().cosine([images[i] for i in rows], [plans[i].clip_text for i in rows]))
        if len(cosines) != len(rows):
            raise PerceptionError(f"CLIP returned {len(cosines)} cosines for {len(rows)} images")
        for i, cos in zip(rows, cosines, strict=True):
            if not _finite(cos):
                raise PerceptionError(f"item {i}: CLIP cosine is {cos!r} for {plans[i].clip_text!r}; "
                                      "refusing to turn it into a score")
            plans[i].cosine = float(cos)

    def _blip_score(self, plan: _Plan) -> tuple[float, str]:
        phrases = [cb.vqa_phrase_score(p_yes, p_no) for p_yes, p_no in plan.answers]
        value = cb.blip_vqa_image_score(phrases)
        if not phrases:
            return value, "no noun phrase: every slot counts 1 (official rule)"
        return value, "; ".join(f"{q} {s:.4f}" for q, s in zip(plan.questions, phrases, strict=True))

    def _spatial_score(self, plan: _Plan, complex: bool) -> tuple[float, str]:
        if plan.objects is None:
            mode = "complex-mode " if complex else ""
            return 0.0, f"no {mode}object pair parsed from the prompt: spatial score 0 (official rule)"
        scaled = to_unidet_frame(plan.detections, plan.height, plan.width)
        value = cb.unidet_2d_score(plan.prompt, scaled, complex=complex, score_threshold=self.detector_threshold)
        labels = [d.label for d in plan.detections]
        found = ", ".join(f"{name} {'found' if name in labels else 'missing'}" for name in plan.queries)
        return value, f"{plan.objects[0]!r} {cb.locality(plan.prompt)!r} {plan.objects[1]!r}: {found}"

    def score(self, images: Sequence[np.ndarray], items: Sequence[dict]) -> list[dict[str, Any]]:
        """Per image: ``score``, ``reason``, ``detections`` ([{label, box, score}], image pixels); complex items
        also carry their components ``attribute``, ``spatial`` and ``clip``."""
        if len(images) != len(items):
            raise UsageError(f"{len(images)} images but {len(items)} items")
        plans = [self._plan(i, image, item) for i, (image, item) in enumerate(zip(images, items, strict=True))]
        self._ask_blip(images, plans)
        self._ask_detector(images, plans)
        self._ask_clip(images, plans)

        out: list[dict[str, Any]] = []
        for plan in plans:
            extra: dict[str, Any] = {}
            if plan.category in ("color", "shape", "texture"):
                value, reason = self._blip_score(plan)
            elif plan.category == "spatial":
                value, reason = self._spatial_score(plan, complex=False)
            elif plan.category == "numeracy":
                scaled = to_unidet_frame(plan.detections, plan.height, plan.width)
                value = cb.numeracy_score(plan.targets, scaled, score_threshold=self.detector_threshold)
                labels = [d.label for d in plan.detections]
                reason = "; ".join(f"{name}: want {count}, {labels.count(name)} detected"
                                   for name, count in plan.targets)
            elif plan.category == "non_spatial":
                value, reason = float(plan.cosine), f"raw CLIP cosine with {plan.clip_text!r}"  # type: ignore[arg-type]
            else:  # complex
                attribute, attribute_reason = self._blip_score(plan)
                spatial, spatial_reason = self._spatial_score(plan, complex=True)
                clip = float(plan.cosine)  # type: ignore[arg-type]
                key = cb.normalise_complex_prompt(plan.prompt)
                value = cb.three_in_one(
                    plan.prompt, attribute, spatial, clip,
                    spatial_prompts={key} if plan.complex_kind == "spatial" else set(),
                    action_prompts={key} if plan.complex_kind == "action" else set(),
                )
                extra = {"attribute": float(attribute), "spatial": float(spatial), "clip": clip}
                reason = (f"3-in-1 ({plan.complex_kind}): attribute {attribute:.4f} [{attribute_reason}], spatial "
                          f"{spatial:.4f} [{spatial_reason}], clip {clip:.4f} [{plan.clip_text!r}]")
            if not _finite(value):
                raise PerceptionError(f"{plan.category} rule gave {value!r} for {plan.prompt!r}")
            out.append({"score": float(value), "reason": reason,
                        "detections": [_detection_json(d) for d in plan.detections], **extra})
        return out
