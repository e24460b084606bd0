"""T2I-CompBench (NeurIPS 2023) and T2I-CompBench++ (TPAMI 2025) scoring rules as pure functions.

Perception (BLIP-VQA probabilities, UniDet detections, MiDaS depth, CLIP cosines) happens elsewhere; the
functions here take plain data and return the numbers the official scripts would write. Rules follow
docs/protocols.md §2, itself a description of the official code (Karine-Huang/T2I-CompBench):

- BLIP-VQA (color, shape, texture, attribute part of complex): ``noun_phrases`` -> ``vqa_question`` ->
  the model gives P(yes), P(no) -> ``vqa_phrase_score`` -> ``blip_vqa_image_score``.
- UniDet 2D spatial: ``spatial_objects``, ``locality``, ``position_score_2d``, ``unidet_2d_score``.
- UniDet 3D spatial (++): ``unidet_3d_score`` (depth map indexed with transposed axes, as the official code).
- UniDet numeracy (++): ``numeracy_targets``, ``numeracy_score``.
- CLIP non-spatial: ``clip_text`` (the score is the raw cosine, averaged over images).
- 3-in-1 complex: ``three_in_one``.
- ``summarize``: per-category means and the "mean of 6 (IRIS-style)" (the benchmark defines no overall).

The rules live in four modules; this one holds the BLIP-VQA, CLIP, 3-in-1 and summary rules and re-exports
the others, so ``irisbench.protocols.compbench`` is the whole API:

- ``compbench_prompts``: categories and the strict reader of the official prompt files;
- ``compbench_language``: tokens, POS tags and noun chunks (spaCy when importable, else a rule-based stand-in);
- ``compbench_detection``: the UniDet 2D/3D spatial and numeracy rules, with their departures from the
  official code.

The BLIP product is computed in float32 like the official torch tensor; the 4-decimal rounding of the
phrase probability and of the product uses ``"{:.4f}"`` formatting, as the official code does.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence

import numpy as np

from irisbench.core.errors import UsageError
from irisbench.protocols.compbench_detection import (
    COMPLEX_PREPOSITIONS,
    NUMBER_WORDS,
    NUMERACY_ALIASES,
    NUMERACY_OBJECTS,
    PERSON_ALIASES,
    SPATIAL_3D_LOCALITIES,
    SPATIAL_LOCALITIES,
    _iou_no_plus1,
    dedupe_detections,
    load_numeracy_objects,
    locality,
    numeracy_score,
    numeracy_targets,
    position_score_2d,
    position_score_3d,
    spatial_objects,
    unidet_2d_score,
    unidet_2d_score_objects,
    unidet_3d_score,
)
from irisbench.protocols.compbench_language import Token, _analyse, noun_phrases, spacy_available, tokens
from irisbench.protocols.compbench_prompts import (
    CATEGORIES,
    COLOR_VERSIONS,
    COMPLEX_SUBSET_FILES,
    MEAN_OF_6,
    MEAN_OF_6_LABEL,
    NUMERACY_OBJECTS_FILE,
    Category,
    PromptFileError,
    PromptParseError,
    category_file,
    load_category_prompts,
    load_prompt_file,
)

# ------------------------------------------------------------------------------------------ BLIP-VQA

_PRE_QUESTION_RE = re.compile(r"[.!\"()*#:;~]")


def _fmt4(value: float) -> float:
    return float(f"{value:.4f}")


def pre_question(question: str, max_words: int = 50) -> str:
    """BLIP's ``pre_question``: lowercase, delete ``.!"()*#:;~`` (keep "?"), strip trailing spaces and keep the
    first ``max_words`` space-separated words. (The BERT tokenizer then truncates at 35 tokens; that is the
    model side's job.)"""
    text = _PRE_QUESTION_RE.sub("", question.lower()).rstrip(" ")
    words = text.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else text


def vqa_question(chunk: str, *, max_words: int = 50) -> str:
    """The question BLIP is asked for one chunk: ``"{chunk}?"`` after BLIP's ``pre_question``."""
    return pre_question(f"{chunk}?", max_words)


def vqa_questions(prompt: str, np_num: int = 8, *, method: str = "auto") -> list[str]:
    """The BLIP questions of a prompt, one per noun-phrase slot that has a chunk (at most ``np_num``)."""
    return [vqa_question(chunk) for chunk in noun_phrases(prompt, method=method)[0][:np_num]]


def vqa_phrase_score(p_yes: float, p_no: float) -> float:
    """P(yes) / (P(yes) + P(no)) written with 4 decimals, as the official ``vqa_prob`` output."""
    p_yes, p_no = float(p_yes), float(p_no)
    if not (math.isfinite(p_yes) and math.isfinite(p_no)) or p_yes < 0 or p_no < 0:
        raise UsageError(f"probabilities must be finite and >= 0, got p_yes={p_yes!r}, p_no={p_no!r}")
    if p_yes + p_no <= 0:
        raise UsageError("p_yes + p_no must be > 0")
    return _fmt4(p_yes / (p_yes + p_no))


def blip_vqa_image_score(phrase_scores: Sequence[float], np_num: int = 8) -> float:
    """Per-image BLIP-VQA score: product over the ``np_num`` phrase slots, rounded to 4 decimals.

    ``phrase_scores[j]`` is the (already 4-decimal) score of chunk j; slots without a chunk count as 1. Chunks
    beyond ``np_num`` are ignored, as in the official loop over ``range(np_num)``. Float32 arithmetic, as the
    official torch tensor.
    """
    if np_num < 1:
        raise UsageError(f"np_num must be >= 1, got {np_num}")
    product = np.float32(1.0)
    for j, value in enumerate(list(phrase_scores)[:np_num]):
        value = float(value)
        if not (0.0 <= value <= 1.0):
            raise UsageError(f"phrase_scores[{j}] must be in [0, 1], got {value!r}")
        product = np.float32(product * np.float32(value))
    return _fmt4(float(product))


# -------------------------------------------------------------------------------------------- CLIP


def clip_text(prompt: str, complex: bool = False, *, method: str = "auto") -> str:
    """Text given to CLIP: the prompt itself, or in complex mode its tokens minus ADJ tokens, joined by spaces."""
    if not complex:
        return prompt
    return " ".join(t.text for t in _analyse(prompt, method)[0] if t.pos != "ADJ")


def mean_score(values: Sequence[float], *, name: str = "scores") -> float:
    """Mean of per-image scores (the category score of every rule, CLIP cosines included)."""
    vals = [float(v) for v in values]
    if not vals:
        raise UsageError(f"{name}: no values to average")
    bad = [i for i, v in enumerate(vals) if not math.isfinite(v)]
    if bad:
        raise UsageError(f"{name}: non-finite value at index {bad[0]} ({vals[bad[0]]!r})")
    return math.fsum(vals) / len(vals)


# -------------------------------------------------------------------------------------------- 3-in-1


def normalise_complex_prompt(prompt: str) -> str:
    """The 3-in-1 membership key: text before the first "." lowercased."""
    return prompt.split(".")[0].lower()


def load_complex_subsets(folder: str | os.PathLike[str]) -> tuple[set[str], set[str]]:
    """(spatial prompts, action prompts) from ``complex_val_spatial.txt``/``complex_val_action.txt``, normalised."""
    return tuple(  # type: ignore[return-value]
        {normalise_complex_prompt(p) for p in load_prompt_file(os.path.join(folder, COMPLEX_SUBSET_FILES[k]))}
        for k in ("spatial", "action")
    )


def three_in_one(
    prompt: str,
    attribute: float,
    spatial: float,
    clip: float,
    *,
    spatial_prompts: set[str] | frozenset[str],
    action_prompts: set[str] | frozenset[str],
) -> float:
    """Complex-category image score from its BLIP-VQA (attribute), 2D-UniDet complex and CLIP complex scores.

    In the spatial subset: (spatial + attribute) / 2; else in the action subset: (clip + attribute) / 2; else
    (attribute + spatial + clip) / 3. Membership compares ``normalise_complex_prompt`` keys (sets may be given
    raw or normalised).
    """
    key = normalise_complex_prompt(prompt)
    if key in spatial_prompts or key in {normalise_complex_prompt(p) for p in spatial_prompts}:
        return (spatial + attribute) * 0.5
    if key in action_prompts or key in {normalise_complex_prompt(p) for p in action_prompts}:
        return (clip + attribute) * 0.5
    return (attribute + spatial + clip) / 3


# ------------------------------------------------------------------------------------------- summary


def summarize(scores_by_category: Mapping[str, Sequence[float]]) -> dict:
    """Per-category mean scores and the "mean of 6 (IRIS-style)".

    T2I-CompBench defines no overall score. The IRIS-style mean is the unweighted mean of the six classic
    categories (color, shape, texture, spatial, non_spatial, complex), given only when all six are present;
    otherwise it is None and ``missing`` lists the absent ones. Note that non_spatial is a raw CLIP cosine
    (~0.3), on a different scale from the others.
    """
    unknown = sorted(set(scores_by_category) - set(CATEGORIES))
    if unknown:
        raise UsageError(f"unknown T2I-CompBench category name(s) {unknown}; known: {list(CATEGORIES)}")
    per_category = {
        name: {"mean": mean_score(values, name=name), "n": len(values), "rule": CATEGORIES[name].rule}
        for name, values in scores_by_category.items()
    }
    missing = [name for name in MEAN_OF_6 if name not in per_category]
    mean6 = None if missing else math.fsum(per_category[name]["mean"] for name in MEAN_OF_6) / len(MEAN_OF_6)
    return {
        "per_category": per_category,
        MEAN_OF_6_LABEL: mean6,
        "missing": missing,
        "note": "T2I-CompBench defines no official overall; the mean of 6 is the unweighted IRIS-style mean "
        "of color, shape, texture, spatial, non_spatial (raw CLIP cosine) and complex.",
    }


__all__ = [
    "CATEGORIES", "COLOR_VERSIONS", "COMPLEX_PREPOSITIONS", "COMPLEX_SUBSET_FILES", "MEAN_OF_6", "MEAN_OF_6_LABEL",
    "NUMBER_WORDS", "NUMERACY_ALIASES", "NUMERACY_OBJECTS", "NUMERACY_OBJECTS_FILE", "PERSON_ALIASES",
    "SPATIAL_3D_LOCALITIES", "SPATIAL_LOCALITIES", "Category", "PromptFileError", "PromptParseError", "Token",
    "_iou_no_plus1", "blip_vqa_image_score", "category_file", "clip_text", "dedupe_detections",
    "load_category_prompts", "load_complex_subsets", "load_numeracy_objects", "load_prompt_file", "locality",
    "mean_score", "normalise_complex_prompt", "noun_phrases", "numeracy_score", "numeracy_targets",
    "position_score_2d", "position_score_3d", "pre_question", "spacy_available", "spatial_objects", "summarize",
    "three_in_one", "tokens", "unidet_2d_score", "unidet_2d_score_objects", "unidet_3d_score", "vqa_phrase_score",
    "vqa_question", "vqa_questions",
]
