"""T2I-CompBench (NeurIPS 2023) and T2I-CompBench++ (TPAMI 2025) scoring rules as pure functions.

Perception (BLIP-VQA probabilities, UniDet detections, MiDaS depth, CLIP cosines) happens elsewhere; the
functions here take plain data and return the numbers the official scripts would write. Rules follow
../shared/PROTOCOLS.md §2, itself a description of the official code (Karine-Huang/T2I-CompBench):

- BLIP-VQA (color, shape, texture, attribute part of complex): ``noun_phrases`` -> ``vqa_question`` ->
  the model gives P(yes), P(no) -> ``vqa_phrase_score`` -> ``blip_vqa_image_score``.
- UniDet 2D spatial: ``spatial_objects``, ``locality``, ``position_score_2d``, ``unidet_2d_score``.
- UniDet 3D spatial (++): ``unidet_3d_score`` (depth map indexed with transposed axes, as the official code).
- UniDet numeracy (++): ``numeracy_targets``, ``numeracy_score``.
- CLIP non-spatial: ``clip_text`` (the score is the raw cosine, averaged over images).
- 3-in-1 complex: ``three_in_one``.
- ``summarize``: per-category means and the "mean of 6 (IRIS-style)" (the benchmark defines no overall).

Language analysis. The official code uses spaCy ``en_core_web_sm`` (noun chunks, NOUN/PROPN/ADJ tags,
tokens). When spaCy and that model import, it is used here too (``method="spacy"``). Otherwise a documented
rule-based stand-in (``method="rules"``) is used; it is an approximation, not a copy of spaCy:

- Tokens: words (letters/digits, with internal apostrophes), a split-off possessive ``'s``, and each other
  non-space character on its own (so ``"plate."`` -> ``plate`` ``.``, ``"mid-air"`` -> ``mid`` ``-`` ``air``,
  as spaCy splits them).
- Tags come from closed word lists (determiners, possessives, pronouns, prepositions, conjunctions, auxiliaries,
  number words), an adjective list (colours, shapes, textures/materials used adjectivally, sizes and the
  other adjectives of the CompBench files), a verb list plus suffix rules (an ``-ed``/``-ing`` word, or a listed
  verb, right after a noun, pronoun, auxiliary or adverb is a VERB; an ``-ed``/``-ing`` word inside a
  determiner phrase is an ADJ), ``-ly`` adverbs (with exceptions such as ``curly``), capitalised words not at
  the start are PROPN; every other word is a NOUN.
- Noun chunks: optional determiner/possessive/number, then adjectives/nouns (adjectives may be joined by
  "and" or "," as in "a black and white shower curtain", a noun may carry a possessive ``'s``), ending at the
  last noun; a determiner phrase with no noun takes its last word as the head ("a brown orange"); a pronoun
  is a chunk on its own. Chunks are split by prepositions, conjunctions between nouns, verbs, commas.
- Known gaps: spaCy's parse-dependent choices (e.g. a noun used adverbially, rare verb/noun ambiguities such as
  a plural noun followed by an unlisted bare verb) are not reproduced. ``tests/test_compbench_rules.py`` checks
  the stand-in on hand-written spaCy-style outputs for real prompts of every category.

Departures from the official code, all deliberate (the official code crashes or is undefined here):

- 2D/3D IoU with a zero union is taken as 0 (official: ZeroDivisionError).
- A prompt with no NOUN gives no objects and score 0 (official: IndexError).
- Numeracy: a prompt whose parse leaves a number word with no next token is skipped at that token (official:
  IndexError); "two <singular-only noun>" and "a/an <plural-only noun>" raise ``PromptParseError`` (official:
  ValueError crash, or silently misaligned counts); no target at all raises ``PromptParseError`` (official:
  ZeroDivisionError).
- Detections are put in descending-score order (stable) and, when ``score_threshold`` is given (default 0.5,
  the detector's ``SCORE_THRESH_TEST``), those with score <= threshold are dropped, as detectron2 does; feeding
  raw detectron2 output gives the same order and set.
- The BLIP product is computed in float32 like the official torch tensor; the 4-decimal rounding of the
  phrase probability and of the product uses ``"{:.4f}"`` formatting, as the official code does.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from irisbench.errors import IrisbenchError, MissingDependencyError, UsageError

# ------------------------------------------------------------------------------------------ categories


@dataclass(frozen=True)
class Category:
    """One T2I-CompBench(++) sub-category: its official val prompt file, scoring rule, mean-of-6 membership."""

    name: str
    val_file: str
    rule: str  # "blip_vqa" | "unidet_2d" | "clip" | "three_in_one" | "unidet_3d" | "numeracy"
    in_mean_of_6: bool
    plus_plus_only: bool = False


CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in (
        Category("color", "color_val.txt", "blip_vqa", True),
        Category("shape", "shape_val.txt", "blip_vqa", True),
        Category("texture", "texture_val.txt", "blip_vqa", True),
        Category("spatial", "spatial_val.txt", "unidet_2d", True),
        Category("non_spatial", "non_spatial_val.txt", "clip", True),
        Category("complex", "complex_val.txt", "three_in_one", True),
        Category("3d_spatial", "3d_spatial_val.txt", "unidet_3d", False, plus_plus_only=True),
        Category("numeracy", "numeracy_val.txt", "numeracy", False, plus_plus_only=True),
    )
}
MEAN_OF_6 = tuple(name for name, c in CATEGORIES.items() if c.in_mean_of_6)
MEAN_OF_6_LABEL = "mean of 6 (IRIS-style)"
COLOR_VERSIONS = {"current": "color_val.txt", "pre-2025-09": "color_val.pre-2025-09.txt"}
COMPLEX_SUBSET_FILES = {"spatial": "complex_val_spatial.txt", "action": "complex_val_action.txt"}
NUMERACY_OBJECTS_FILE = "new_objects.txt"


class PromptFileError(IrisbenchError, ValueError):
    """An official-style prompt file that cannot be read as one prompt per line (message names file:line)."""


class PromptParseError(IrisbenchError, ValueError):
    """A prompt the official rule cannot score (the official script would crash or misalign)."""


def category_file(category: str, *, color_version: str = "current") -> str:
    """File name of the official val prompt file of ``category``.

    ``color_version="pre-2025-09"`` selects the color file as it was before the 2025-09-03 "remove duplicates"
    edit (used by papers before Sept 2025, IRIS and T2I-R1 included); it only applies to ``color``.
    """
    if category not in CATEGORIES:
        raise UsageError(f"unknown T2I-CompBench category {category!r}; known: {list(CATEGORIES)}")
    if color_version not in COLOR_VERSIONS:
        raise UsageError(f"color_version must be one of {list(COLOR_VERSIONS)}, got {color_version!r}")
    if category == "color":
        return COLOR_VERSIONS[color_version]
    return CATEGORIES[category].val_file


def load_prompt_file(path: str | os.PathLike[str]) -> list[str]:
    """Read an official ``*_val.txt`` prompt file: one prompt per line, in file order, duplicates kept.

    Accepts LF or CRLF line endings (mixed too), a missing final newline and a UTF-8 BOM. Prompts are kept
    verbatim apart from the line ending. Rejected with ``PromptFileError`` (naming file:line): a file that is
    not UTF-8, an empty file, a blank line anywhere (none of the official files has one, and a blank line
    would shift the prompt index that the 10-images-per-prompt naming and the 3-in-1 slicing rely on), a stray
    carriage return inside a line, and a prompt containing "_" or "/" (the official scripts take the prompt
    back from the image file name ``{prompt}_{index:06d}.png`` by splitting at the first "_").
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise PromptFileError(f"{path}: prompt file not found") from None
    except IsADirectoryError:
        raise PromptFileError(f"{path}: is a directory, expected a prompt .txt file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        lineno = raw.count(b"\n", 0, err.start) + 1
        raise PromptFileError(f"{path}:{lineno}: not valid UTF-8 (byte offset {err.start}: {err.reason})") from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise PromptFileError(f"{path}: prompt file is empty")
    lines = text.split("\n")
    if lines[-1] == "":  # the final newline, when present
        lines.pop()
    prompts: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        where = f"{path}:{lineno}"
        if not line.strip():
            raise PromptFileError(f"{where}: blank line (each line must hold one prompt)")
        if "\r" in line:
            raise PromptFileError(f"{where}: stray carriage return inside the line")
        for bad in ("_", "/"):
            if bad in line:
                raise PromptFileError(
                    f"{where}: prompt contains {bad!r}, which breaks the official '{{prompt}}_{{index}}.png' "
                    f"image naming: {line!r}"
                )
        prompts.append(line)
    return prompts


def load_category_prompts(
    folder: str | os.PathLike[str], category: str, *, color_version: str = "current"
) -> list[str]:
    """``load_prompt_file`` of the official val file of ``category`` inside ``folder``."""
    return load_prompt_file(os.path.join(folder, category_file(category, color_version=color_version)))


# -------------------------------------------------------------------------------- language analysis


@dataclass(frozen=True)
class Token:
    text: str
    pos: str  # universal POS tag (spaCy's ``pos_``), or the rule-based stand-in's
    start: int  # character offsets in the prompt
    end: int


_TOKEN_RE = re.compile(r"[A-Za-z0-9]+(?:'(?!s\b)[A-Za-z]+)*|'s\b|\S", re.IGNORECASE)

_DET = frozenset(
    "a an the this that these those some any each every another no both all several either neither".split()
)
_POSS = frozenset("my your his her its our their".split())
_PRON = frozenset(
    "i you he she it we they me him us them myself yourself himself herself itself ourselves themselves "
    "someone somebody something everyone everybody everything anyone anything nobody nothing who whom which "
    "what".split()
)
_ADP = frozenset(
    "of on in at with by for from to into onto over under above below behind beside besides between among "
    "amongst through throughout across along alongside around against near towards toward upon within without "
    "inside outside beneath underneath atop like after before during past off about amid via beyond despite "
    "except than up down out".split()
)
_CCONJ = frozenset("and or but nor".split())
_SCONJ = frozenset("while as because when where if though although until whereas whilst since so".split())
_AUX = frozenset("is are was were be been being am has have had do does did will would can could should shall may "
                 "might must".split())
_PART = frozenset(["not", "n't"])
_NUM = frozenset(
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty hundred thousand".split()
)
_ADV = frozenset(
    "very quite too really almost just also always never often sometimes together nearby away again forth here "
    "there then now still even only already soon perhaps rather somewhat slightly extremely well back "
    "closely gently slowly quickly".split()
)
# Adjectives of the CompBench val files (colours, shapes, textures, sizes, and the rest), plus common ones.
_ADJ = frozenset(
    """
    red orange yellow green blue purple pink brown black white gray grey silver gold golden beige tan violet navy
    teal turquoise maroon cyan magenta crimson scarlet ivory lavender bronze whitish reddish bluish greenish
    round square rectangular triangular circular oval spherical cubic cylindrical conical pyramidal pentagonal
    hexagonal octagonal oblong angular curved rounded flat pointed heart-shaped star-shaped
    metallic wooden fluffy soft smooth rough hard shiny glossy fuzzy bumpy silky plush velvety furry woolen
    woollen leathery rubbery glassy crunchy crispy juicy sticky slimy prickly spiky thorny rusty dusty sleek
    polished striped checkered spotted dotted textured transparent translucent opaque matte wet dry icy
    slushy lumpy pillowy sugary crisp ripe sweet sour tart savory spicy salty bitter tasty fresh stale
    big small large tiny huge giant tall short long wide narrow thick thin high low heavy little
    old new young ancient modern vintage antique bright dark dim warm cool cold hot sunny rainy cloudy windy
    starry snowy foggy clean dirty empty full open closed beautiful pretty lovely elegant graceful majestic
    towering powerful gentle calm quiet loud colorful colourful vibrant delicate intricate ornate cozy cosy
    comfortable fragrant natural perfect different same unique special favorite favourite personal next
    serene peaceful playful lush rocky sandy grassy muddy leafy wild cute fancy plain simple stylish sturdy
    fragile sharp dull blunt steep deep shallow busy lazy happy sad angry tired hungry sleepy proud brave
    curious friendly lively jagged gnarled weathered rugged scenic picturesque dramatic romantic mysterious
    magical luxurious cheerful bold rich pale vivid fiery shimmering sparkling gleaming glowing
    glistening twinkling towering winding crumbling cluttered tiled stainless wrinkled crumpled twisted
    whimsical rustic cozy futuristic electronic digital artistic musical tropical exotic urban rural
    miniature massive enormous slender sleek streamlined rotten frozen striking stunning
    thrilling soothing refreshing comforting inviting welcoming tranquil endless timeless priceless precious
    heavy electric wet other many few grand early floral compact murky curvy straight reedy choppy iridescent
    tender distant greasy delicious therapeutic daily treacherous seasonal geometric ceramic eager maternal sheer
    abstract emotional clear celestial latest fashionable joyful deaf bad historic imaginary homeless kind
    gourmet local blank solar candlelit leaky delectable chilly hind necessary broken flickering
    """.split()
)
_ADJ_LY = frozenset(
    "curly fluffy woolly wooly silly lovely friendly lively lonely ugly holy jelly belly lily fly butterfly "
    "family bubbly sparkly prickly wrinkly crinkly chilly hilly jolly smelly early daily only".split()
)
# Verbs seen after a subject in the CompBench files (any form); base forms that are also common nouns
# (watch, ring, rest, play, walk, ...) are left out on purpose.
_VERB = frozenset(
    """
    sit sits sat stand stands stood lie lies lay hang hangs hung hold holds held float floats shine shines shone
    glow glows read reads move moves touch touches jot jots provide provides reflect reflects fly flies flew
    swim swims swam run runs ran jump jumps eat eats ate drinks drank wear wears wore carry carries perch
    perches lean leans grow grows grew bloom blooms sparkle sparkles gleam gleams flow flows drift drifts glide
    glides loom looms nap naps release releases display displays surround surrounds sway sways dance dances
    sing sings sang write writes wrote cook cooks
    bake bakes chase chases wag wags stretch stretches sleep sleeps slept wait waits soar soars twirl twirls
    crash crashes rides rode drive drives drove falls fell see sees saw tell tells told wake wakes
    woke spin spins spun sink sinks sank stride strides strode lights lit make makes made take takes took
    give gives gave come comes came go goes went know knows knew find finds found keep keeps kept
    features rests plays walks works looks watches shows covers lines barks paints sails swings rolls rests
    seems seem become becomes became remain remains appear appears contrast contrasts decorate decorates
    adorn adorns fill fills rustle rustles nestle nestles dangle dangles peek peeks creep creeps crawl crawls
    climb climbs graze grazes gaze gazes stare stares smile smiles laugh laughs cry cries hide hides hid
    """.split()
)
_NOT_VERB_SUFFIX = frozenset(
    """
    ceiling building painting paintings clothing wedding morning evening ring rings king string wing wings thing
    things spring swing pudding bed shed sled red seed need feed reed bread thread hundred sing
    bedding railing stuffing frosting icing seasoning filling lighting flooring siding awning sibling darling
    duckling dumpling earring earrings herring pudding stocking stockings sapling ceiling offering
    """.split()
)
_HEAD_DET = frozenset("a an the this that these those another".split())
_SPATIAL_DROP = frozenset(["top", "the side", "the left", "the right"])


def _is_word(text: str) -> bool:
    return bool(text) and (text[0].isalnum())


def _tokenize(prompt: str) -> list[tuple[str, int, int]]:
    return [(m.group(0), m.start(), m.end()) for m in _TOKEN_RE.finditer(prompt)]


# Closed word classes, checked in this order (the first list holding a word gives its tag).
_CLOSED_CLASSES = ((_DET, "DET"), (_POSS, "POSS"), (_PRON, "PRON"), (_ADP, "ADP"), (_CCONJ, "CCONJ"),
                   (_SCONJ, "SCONJ"), (_AUX, "AUX"), (_PART, "PART"), (_ADV, "ADV"))


def _rule_tags(prompt: str) -> list[Token]:
    """Rule-based stand-in for spaCy's POS tags (see the module docstring)."""
    raw = _tokenize(prompt)
    n = len(raw)
    tags: list[str] = [""] * n
    lows = [t.lower() for t, _, _ in raw]

    # Pass 1: closed classes and lists, context-free.
    for i, (text, _, _) in enumerate(raw):
        low = lows[i]
        if not _is_word(text):
            tags[i] = "PART" if low == "'s" else ("PUNCT" if text != "-" else "HYPH")
        elif low.isdigit() or low in _NUM:
            tags[i] = "NUM"
        elif (closed := next((tag for words, tag in _CLOSED_CLASSES if low in words), None)) is not None:
            tags[i] = closed
        elif low in _ADJ and not low.endswith(("ed", "ing")):
            tags[i] = "ADJ"  # listed -ed/-ing adjectives are resolved in context below
        elif low.endswith("ly") and low not in _ADJ_LY and len(low) > 4:
            tags[i] = "ADV"
        else:
            tags[i] = "?"

    # "her" before an adjective/noun-ish word is a possessive determiner, otherwise an object pronoun.
    for i in range(n):
        if tags[i] == "POSS" and lows[i] == "her":
            nxt = tags[i + 1] if i + 1 < n else ""
            if nxt not in ("ADJ", "?", "NUM"):
                tags[i] = "PRON"
    # An auxiliary after a determiner or adjective is a noun ("a cylindrical can of soup").
    for i in range(1, n):
        if tags[i] == "AUX" and tags[i - 1] in ("DET", "POSS", "ADJ"):
            tags[i] = "?"
    # "next" in "next to" is an adverb (a boundary), elsewhere an adjective ("their next novel").
    for i in range(n):
        if lows[i] == "next" and i + 1 < n and lows[i + 1] == "to":
            tags[i] = "ADV"

    # Pass 2: open-class words, left to right with context.
    def prev_tag(i: int) -> str:
        return tags[i - 1] if i > 0 else ""

    for i, (text, _, _) in enumerate(raw):
        if tags[i] != "?":
            continue
        low = lows[i]
        before = prev_tag(i)
        after_subject = before in ("NOUN", "PROPN", "PRON", "AUX", "ADV", "VERB", "PART", "SCONJ")
        suffix_verb = (low.endswith("ed") or low.endswith("ing")) and low not in _NOT_VERB_SUFFIX and len(low) > 4
        if before == "PART" and lows[i - 1] == "'s":
            after_subject = False  # the chef's knife
        nxt = tags[i + 1] if i + 1 < n else ""
        if i > 0 and text[0].isupper() and before not in ("PUNCT", ""):
            tags[i] = "PROPN"
        elif before in ("NOUN", "PROPN") and low.endswith("ing") and suffix_verb and nxt == "?":
            tags[i] = "NOUN"  # -ing compound: "the glass baking dish", "a rocking chair"
        elif after_subject and (low in _VERB or suffix_verb):
            tags[i] = "VERB"
        elif before in ("ADP", "CCONJ", "SCONJ", "PUNCT") and low.endswith("ing") and len(low) > 4 and nxt in (
            "DET", "POSS", "PRON"
        ):
            tags[i] = "VERB"  # "and building a tower", "and painting a wall"
        elif before in ("ADP", "CCONJ", "SCONJ", "PUNCT") and low.endswith("ing") and suffix_verb and nxt not in (
            "?", "ADJ", "NOUN", "PROPN", "HYPH"
        ):
            tags[i] = "VERB"  # "and waiting for a bus", "while fishing."
        elif before == "" and suffix_verb:
            tags[i] = "VERB"
        elif low in _ADJ:
            tags[i] = "ADJ"
        elif suffix_verb:
            # Inside a determiner phrase ("the tiled floor", "a running dog"): a modifier, unless it ends the
            # phrase ("a painting behind ...") where it is the head noun.
            tags[i] = "ADJ" if nxt in ("?", "ADJ") else "NOUN"
        else:
            tags[i] = "NOUN"

    # "can" ending a phrase is the noun ("a paint can and ..."), not the modal.
    for i in range(n):
        if lows[i] == "can" and tags[i] == "AUX" and (i + 1 == n or tags[i + 1] in ("CCONJ", "PUNCT", "ADP", "DET")):
            tags[i] = "NOUN"
    # Between "ADJ ," and a noun, a word tagged NOUN is a further adjective ("the warm, gooey cheese").
    for i in range(2, n - 1):
        if tags[i] == "NOUN" and raw[i - 1][0] == "," and tags[i - 2] == "ADJ" and tags[i + 1] == "NOUN":
            tags[i] = "ADJ"
    # "'s" after a noun is a possessive marker (PART); elsewhere ("it's") an auxiliary.
    for i in range(n):
        if lows[i] == "'s" and not (i > 0 and tags[i - 1] in ("NOUN", "PROPN")):
            tags[i] = "AUX"

    # An adjective ending a determiner phrase is its head: "a brown orange", "a red one".
    for i in range(n):
        if tags[i] != "ADJ" or (i + 1 < n and tags[i + 1] in ("ADJ", "NOUN", "PROPN", "HYPH", "NUM")):
            continue
        if i + 2 < n and (tags[i + 1] == "CCONJ" or raw[i + 1][0] == ",") and tags[i + 2] == "ADJ":
            continue  # "a black and white cat", "the smooth, glossy surface"
        j = i - 1
        while j >= 0 and tags[j] in ("ADJ", "ADV"):
            j -= 1
        if j >= 0 and (tags[j] == "POSS" or lows[j] in _HEAD_DET):
            tags[i] = "NOUN"
    return [Token(text, tags[i], start, end) for i, (text, start, end) in enumerate(raw)]


def _rule_chunks(prompt: str, tokens: Sequence[Token]) -> list[str]:
    """Rule-based noun chunks (see the module docstring); returns the chunk texts as spans of ``prompt``."""
    n = len(tokens)
    chunks: list[str] = []
    nominal = ("NOUN", "PROPN")
    i = 0
    while i < n:
        tag = tokens[i].pos
        if tag == "PRON":
            chunks.append(tokens[i].text)
            i += 1
            continue
        if tag not in ("DET", "POSS", "NUM", "ADJ", "NOUN", "PROPN", "ADV"):
            i += 1
            continue
        if tag == "ADV" and not (i + 1 < n and tokens[i + 1].pos == "ADJ"):
            i += 1
            continue
        j = i + 1
        while j < n:
            t = tokens[j]
            prev = tokens[j - 1]
            nxt = tokens[j + 1] if j + 1 < n else None
            if t.pos in ("ADJ", "NOUN", "PROPN", "NUM"):
                if t.pos == "NUM" and prev.pos in nominal:
                    break
                j += 1
            elif t.pos == "ADV" and nxt is not None and nxt.pos == "ADJ":
                j += 1
            elif t.pos == "HYPH" and nxt is not None and prev.end == t.start and t.end == nxt.start:
                j += 1
            elif (t.pos == "CCONJ" or t.text == ",") and prev.pos == "ADJ" and nxt is not None and nxt.pos == "ADJ":
                j += 1
            elif t.pos == "PART" and t.text.lower() == "'s" and prev.pos in nominal and nxt is not None and (
                nxt.pos in ("ADJ", "NOUN", "PROPN")
            ):
                j += 1
            else:
                break
        heads = [k for k in range(i, j) if tokens[k].pos in nominal]
        if heads:
            head = heads[-1]
            chunks.append(prompt[tokens[i].start : tokens[head].end])
            i = head + 1
        else:
            i = j
    return chunks


@functools.lru_cache(maxsize=1)
def _spacy_model() -> Any | None:
    try:
        import spacy  # optional and heavy: imported on first use

        return spacy.load("en_core_web_sm")
    except Exception:  # not installed, or the model package is missing
        return None


def spacy_available() -> bool:
    """True when spaCy and ``en_core_web_sm`` import (the official analyser)."""
    return _spacy_model() is not None


def _resolve(method: str) -> str:
    if method not in ("auto", "spacy", "rules"):
        raise UsageError(f"method must be 'auto', 'spacy' or 'rules', got {method!r}")
    if method == "rules":
        return "rules"
    if _spacy_model() is not None:
        return "spacy"
    if method == "spacy":
        raise MissingDependencyError("method='spacy' needs spaCy and the en_core_web_sm model, "
                                     "which are not importable")
    return "rules"


@functools.lru_cache(maxsize=4096)
def _analyse(prompt: str, method: str) -> tuple[tuple[Token, ...], tuple[str, ...], str]:
    used = _resolve(method)
    if used == "spacy":
        doc = _spacy_model()(prompt)
        tokens = tuple(Token(t.text, t.pos_, t.idx, t.idx + len(t.text)) for t in doc)
        return tokens, tuple(c.text for c in doc.noun_chunks), used
    tokens = tuple(_rule_tags(prompt))
    return tokens, tuple(_rule_chunks(prompt, tokens)), used


def tokens(prompt: str, *, method: str = "auto") -> list[Token]:
    """Tokens with POS tags (spaCy when available, else the rule-based stand-in)."""
    return list(_analyse(prompt, method)[0])


def noun_phrases(prompt: str, *, method: str = "auto") -> tuple[list[str], str]:
    """Noun chunks of ``prompt`` as the BLIP-VQA rule uses them, and the method used ("spacy" or "rules").

    Chunks whose text is exactly one of {"top", "the side", "the left", "the right"} are dropped, as in the
    official code (case-sensitive: "the top" from "on the top of" is kept).
    """
    _, chunks, used = _analyse(prompt, method)
    return [c for c in chunks if c not in _SPATIAL_DROP], used


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


# ------------------------------------------------------------------------------------ detections


@dataclass(frozen=True)
class _Det:
    label: str
    box: tuple[float, float, float, float]
    score: float


def _as_dets(detections: Iterable[Any], score_threshold: float | None) -> list[_Det]:
    out: list[_Det] = []
    for k, det in enumerate(detections):
        if hasattr(det, "label") and hasattr(det, "box") and hasattr(det, "score"):
            label, box, score = det.label, det.box, det.score
        else:
            try:
                label, box, score = det
            except (TypeError, ValueError):
                raise UsageError(f"detections[{k}] must be (label, box, score) or have .label/.box/.score") from None
        if not isinstance(label, str):
            raise UsageError(f"detections[{k}].label must be a string, got {label!r}")
        box_t = tuple(float(v) for v in box)
        if len(box_t) != 4 or not all(math.isfinite(v) for v in box_t):
            raise UsageError(f"detections[{k}].box must be 4 finite numbers (x1, y1, x2, y2), got {box!r}")
        score = float(score)
        if not math.isfinite(score):
            raise UsageError(f"detections[{k}].score must be finite, got {score!r}")
        if score_threshold is not None and not score > score_threshold:
            continue
        out.append(_Det(label, box_t, score))  # type: ignore[arg-type]
    # Descending score, stable (== detectron2's output order when it is already sorted).
    return sorted(out, key=lambda d: -d.score)


def _iou_no_plus1(b1: Sequence[float], b2: Sequence[float]) -> float:
    x_overlap = max(0.0, min(b1[2], b2[2]) - max(b1[0], b2[0]))
    y_overlap = max(0.0, min(b1[3], b2[3]) - max(b1[1], b2[1]))
    inter = x_overlap * y_overlap
    union = (b1[2] - b1[0]) * (b1[3] - b1[1]) + (b2[2] - b2[0]) * (b2[3] - b2[1]) - inter
    return inter / union if union > 0 else 0.0


def _centre_offset(b1: Sequence[float], b2: Sequence[float]) -> tuple[float, float]:
    """(dx, dy) = centre of box 2 minus centre of box 1."""
    return ((b2[0] + b2[2]) / 2 - (b1[0] + b1[2]) / 2, (b2[1] + b2[3]) / 2 - (b1[1] + b1[3]) / 2)


# ---------------------------------------------------------------------------------------- 2D spatial

SPATIAL_LOCALITIES = (
    "on side of", "next to", "near", "on the left of", "on the right of", "on the bottom of", "on the top of",
    "on top of",
)
COMPLEX_PREPOSITIONS = ("on top of", "on bottom of", "on the left", "on the right", "next to", "on side of", "near")
PERSON_ALIASES = frozenset(["girl", "boy", "man", "woman"])


def locality(prompt: str, vocabulary: Sequence[str] = SPATIAL_LOCALITIES) -> str | None:
    """The first entry of ``vocabulary`` (official order) that occurs as a substring of ``prompt``, else None."""
    for word in vocabulary:
        if word in prompt:
            return word
    return None


def _person(name: str | None) -> str | None:
    return "person" if name in PERSON_ALIASES else name


def spatial_objects(prompt: str, complex: bool = False, *, method: str = "auto") -> tuple[str, str] | None:
    """The two object names the UniDet rules look for, after the person alias (girl/boy/man/woman -> person).

    Simple mode: the first and the last NOUN token (the same token if there is one noun; None if none).
    Complex mode: for each occurrence of a phrase of ``COMPLEX_PREPOSITIONS`` (matched on 3-, 2-, then 1-token
    spans), the nearest NOUN/PROPN before it and the first NOUN after it (if no NOUN follows, the first PROPN
    that is not followed by another PROPN); exactly 2 names overall, else None.
    """
    toks, _, _ = _analyse(prompt, method)
    if not complex:
        nouns = [t.text for t in toks if t.pos == "NOUN"]
        if not nouns:
            return None
        return _person(nouns[0]), _person(nouns[-1])  # type: ignore[return-value]
    n = len(toks)

    def span_text(i: int, k: int) -> str:
        end = min(i + k, n)
        return prompt[toks[i].start : toks[end - 1].end] if end > i else ""

    objects: list[str] = []
    for i in range(n):
        k = next((k for k in (3, 2, 1) if span_text(i, k) in COMPLEX_PREPOSITIONS), 0)
        if not k:
            continue
        for j in range(i - 1, -1, -1):
            if toks[j].pos in ("NOUN", "PROPN"):
                objects.append(toks[j].text)
                break
        reached_end = False
        for j in range(i + k, n):
            if toks[j].pos == "NOUN":
                objects.append(toks[j].text)
                break
            if j == n - 1:
                reached_end = True
        if reached_end:
            for j in range(i + k, n):
                if j + 1 < n and toks[j].pos == "PROPN" and toks[j + 1].pos != "PROPN":
                    objects.append(toks[j].text)
                    break
    if len(objects) != 2:
        return None
    return _person(objects[0]), _person(objects[1])  # type: ignore[return-value]


def position_score_2d(
    where: str | None,
    box1: Sequence[float],
    box2: Sequence[float],
    *,
    iou_threshold: float = 0.1,
    distance_threshold: float = 150.0,
) -> float:
    """Soft position score of box 1 (first object) relative to box 2, PROTOCOLS.md §2.4 table.

    dx, dy = centre2 - centre1 in pixels (~480-px images), IoU without the +1 convention.
    "next to"/"on side of"/"near": 1 if |dx| < 150 or |dy| < 150, else 150 / max(|dx|, |dy|).
    "on the right of": needs dx < 0 and |dx| > |dy|: 1 if IoU < 0.1 else 0.1 / IoU; otherwise 0.
    "on the left of": dx > 0; "on the bottom of": dy < 0 and |dy| > |dx|; "on the top of": dy > 0.
    Anything else ("on top of" included, None included): 0.
    """
    dx, dy = _centre_offset(box1, box2)
    iou = _iou_no_plus1(box1, box2)

    def directional(ok: bool, dominant: bool) -> float:
        if ok and dominant:
            return 1.0 if iou < iou_threshold else iou_threshold / iou
        return 0.0

    if where in ("next to", "on side of", "near"):
        if abs(dx) < distance_threshold or abs(dy) < distance_threshold:
            return 1.0
        return distance_threshold / max(abs(dx), abs(dy))
    if where == "on the right of":
        return directional(dx < 0, abs(dx) > abs(dy))
    if where == "on the left of":
        return directional(dx > 0, abs(dx) > abs(dy))
    if where == "on the bottom of":
        return directional(dy < 0, abs(dy) > abs(dx))
    if where == "on the top of":
        return directional(dy > 0, abs(dy) > abs(dx))
    return 0.0


def unidet_2d_score_objects(
    obj1: str | None,
    obj2: str | None,
    where: str | None,
    detections: Iterable[Any],
    *,
    score_threshold: float | None = 0.5,
) -> float:
    """2D spatial image score for given object names and locality (names must equal a label exactly).

    Each name takes its first (most confident) detection. Both found: 0.25*s1 + 0.25*s2 + 0.5*position;
    one found: 0.25*s; none: 0. Then a score below 0.5 becomes 0 (so one found object always gives 0).
    """
    dets = _as_dets(detections, score_threshold)
    labels = [d.label for d in dets]
    d1 = dets[labels.index(obj1)] if obj1 in labels else None
    d2 = dets[labels.index(obj2)] if obj2 in labels else None
    if d1 is not None and d2 is not None:
        score = 0.25 * d1.score + 0.25 * d2.score + position_score_2d(where, d1.box, d2.box) / 2
    elif d1 is not None:
        score = 0.25 * d1.score
    elif d2 is not None:
        score = 0.25 * d2.score
    else:
        score = 0.0
    return 0.0 if score < 0.5 else score


def unidet_2d_score(
    prompt: str,
    detections: Iterable[Any],
    complex: bool = False,
    *,
    score_threshold: float | None = 0.5,
    method: str = "auto",
) -> float:
    """2D spatial (UniDet) image score of ``prompt`` given the detector's (label, box, score) list.

    ``complex=True`` is the complex category's mode (objects around the preposition phrase). Boxes are
    (x1, y1, x2, y2) in the detector's input pixels (short side 479, long side at most 480).
    """
    objects = spatial_objects(prompt, complex=complex, method=method)
    obj1, obj2 = objects if objects is not None else (None, None)
    return unidet_2d_score_objects(obj1, obj2, locality(prompt), detections, score_threshold=score_threshold)


# ---------------------------------------------------------------------------------------- 3D spatial

SPATIAL_3D_LOCALITIES = ("in front of", "behind", "hidden")


def _mean_depth(depth: np.ndarray, box: Sequence[float]) -> float:
    # Official quirk: the first index runs over x, the second over y (transposed axes); int() truncates.
    region = depth[int(box[0]) : int(box[2]), int(box[1]) : int(box[3])]
    if region.size == 0:
        return math.nan  # torch's mean of an empty tensor; every comparison with it is False
    return float(np.mean(region, dtype=np.float64))


def position_score_3d(
    where: str | None,
    box1: Sequence[float],
    box2: Sequence[float],
    depth: np.ndarray,
    *,
    iou_threshold: float = 0.5,
) -> float:
    """3D position score, PROTOCOLS.md §2.5: IoU (no +1) and mean depth over each box (MiDaS: larger = nearer).

    "in front of": depth1 > depth2 needed; IoU > 0.5 -> 1, 0 < IoU < 0.5 -> IoU/0.5, else 0.
    "behind"/"hidden": depth1 < depth2 needed, same IoU table. IoU exactly 0.5 gives 0 (official branches).
    Depth is read as ``depth[x1:x2, y1:y2]`` (transposed axes, as the official code).
    """
    if where not in SPATIAL_3D_LOCALITIES:
        return 0.0
    iou = _iou_no_plus1(box1, box2)
    diff = _mean_depth(depth, box1) - _mean_depth(depth, box2)
    nearer = diff > 0 if where == "in front of" else diff < 0
    if iou > iou_threshold:
        return 1.0 if nearer else 0.0
    if 0 < iou < iou_threshold:
        return iou / iou_threshold if nearer else 0.0
    return 0.0


def unidet_3d_score(
    prompt: str,
    detections: Iterable[Any],
    depth: np.ndarray,
    *,
    score_threshold: float | None = 0.5,
    method: str = "auto",
) -> float:
    """3D spatial (UniDet + MiDaS) image score: 0.25*s1 + 0.25*s2 + 0.5*position, no 0.5 cut.

    ``depth`` is the 2-D depth map (min-max normalised, 8-bit in the official pipeline) resized to the image
    that the boxes refer to. Objects are the first/last NOUN (person alias applied); locality the first of
    "in front of", "behind", "hidden" in the prompt. Names match by substring: a name is "present" when it
    occurs in the space-joined label list; its detection index is found by scanning the detections in order
    and keeping, for each name, the last match seen before both names have matched (official quirk).
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise UsageError(f"depth must be a 2-D array, got shape {depth.shape}")
    dets = _as_dets(detections, score_threshold)
    objects = spatial_objects(prompt, complex=False, method=method)
    if objects is None:
        return 0.0
    obj1, obj2 = objects
    labels = [d.label for d in dets]
    joined = " ".join(labels)
    in1, in2 = obj1 in joined, obj2 in joined
    if in1 and in2:
        pos1 = pos2 = None
        for i, label in enumerate(labels):
            if obj1 in label:
                pos1 = i
            if obj2 in label:
                pos2 = i
            if pos1 is not None and pos2 is not None:
                break
        if pos1 is not None and pos2 is not None:
            d1, d2 = dets[pos1], dets[pos2]
            where = locality(prompt, SPATIAL_3D_LOCALITIES)
            return 0.25 * d1.score + 0.25 * d2.score + position_score_3d(where, d1.box, d2.box, depth) / 2
        # Only reachable for a name holding a space matched across two joined labels: treat it as absent.
        in1, in2 = pos1 is not None, pos2 is not None
    for name, present in ((obj1, in1), (obj2, in2)):
        if present:
            first = next((d for d in dets if name in d.label), None)
            if first is not None:
                return 0.25 * first.score
    return 0.0


# ------------------------------------------------------------------------------------------ numeracy

NUMBER_WORDS = ("a", "an", "one", "two", "three", "four", "five", "six", "seven", "eight")
_NUMBER_VALUES = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}
NUMERACY_ALIASES = {
    "boy": "person", "girl": "person", "man": "person", "woman": "person", "ship": "boat",
    "telivision": "tv",  # sic: the official alias is misspelt, so "television" is *not* mapped to "tv"
    "goldfish": "fish", "painting": "picture",
}
# The singular - plural list of the official ``examples/dataset/new_objects.txt`` (file order, duplicates kept),
# used when no file is given. tests/test_compbench_files.py checks it against the reference copy.
NUMERACY_OBJECTS: tuple[tuple[str, str], ...] = tuple(
    tuple(pair.split("-"))  # type: ignore[misc]
    for pair in """
    bottle-bottles cup-cups cake-cakes bird-birds knife-knives microwave-microwaves desk-desks book-books
    helmet-helmets pillow-pillows bowl-bowls flag-flags stool-stools toy-toys pen-pens microphone-microphones
    bread-breads fish-fish camera-cameras candle-candles paddle-paddles drum-drums guitar-guitars
    tomato-tomatoes tent-tents kite-kites lemon-lemons strawberry-strawberries suitcase-suitcases pear-pears
    printer-printers duck-ducks hamburger-hamburgers deer-deer egg-eggs ship-ships chicken-chickens
    peach-peaches helicopter-helicopters swan-swans camel-camels goldfish-goldfish shrimp-shrimp
    banana-bananas balloon-balloons giraffe-giraffes frog-frogs horse-horses man-men rabbit-rabbits
    bicycle-bicycles bee-bees girl-girls mouse-mice painting-paintings fish-fish chicken-chickens desk-desks
    lamp-lamps cow-cows train-trains vase-vases pig-pigs sheep-sheep airplane-airplanes woman-women
    phone-phones boy-boys plate-plates bird-birds computer-computers book-books couch-couches turtle-turtles
    bowl-bowls cup-cups bag-bags car-cars backpack-backpacks microwave-microwaves dog-dogs
    television-televisions butterfly-butterflies cat-cats person-people table-tables sofa-sofas key-keys
    refrigerator-refrigerators clock-clocks candle-candles chair-chairs pig-pigs rabbit-rabbits truck-trucks
    boat-boats bear-bears bicycle-bicycles sink-sinks horse-horses apple-apples
    """.split()
)


def load_numeracy_objects(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Read ``new_objects.txt`` ("singular - plural" per line, lowercased and stripped like the official code)."""
    pairs: list[tuple[str, str]] = []
    for lineno, line in enumerate(load_prompt_file(path), start=1):
        parts = line.split(" - ")
        if len(parts) < 2:
            raise PromptFileError(f"{path}:{lineno}: expected 'singular - plural', got {line!r}")
        pairs.append((parts[0].strip().lower(), parts[1].strip().lower()))
    return pairs


def numeracy_targets(
    prompt: str,
    *,
    objects: Sequence[tuple[str, str]] | None = None,
    method: str = "auto",
) -> list[tuple[str, int]]:
    """(object name, target count) pairs of a numeracy prompt, with the official aliases applied.

    A token equal to one of a/an/one..eight (case-sensitive, as the official code) followed by a noun of the
    singular/plural list (``objects``; default ``NUMERACY_OBJECTS``), either the next two tokens as one name or
    the next token. A plural (with a number other than a/an/one) gives the singular name and the number's
    value; a singular with a/an/one gives count 1; a two-token name in the singular list gives count 1.
    Raises ``PromptParseError`` where the official script would crash or misalign its counts, and when no
    target is found.
    """
    pairs = list(NUMERACY_OBJECTS if objects is None else objects)
    singular = [s for s, _ in pairs]
    plural = [p for _, p in pairs]
    toks = [t.text for t in _analyse(prompt, method)[0]]
    n = len(toks)
    found: list[tuple[str, int]] = []
    for i, word in enumerate(toks):
        if word not in NUMBER_WORDS or i + 1 >= n:
            continue
        two = f"{toks[i + 1]} {toks[i + 2]}" if i < n - 2 else None
        if two is not None and (two in singular or two in plural):
            if two in plural and word not in ("a", "an", "one"):
                found.append((singular[plural.index(two)], _NUMBER_VALUES[word]))
            else:
                found.append((two, 1))
        elif toks[i + 1] in singular or toks[i + 1] in plural:
            name = toks[i + 1]
            if name in singular and word in ("a", "an", "one"):
                found.append((name, 1))
            elif name not in plural:
                raise PromptParseError(
                    f"{prompt!r}: {word!r} followed by singular-only {name!r}; the official parser crashes here"
                )
            elif word not in _NUMBER_VALUES:
                raise PromptParseError(
                    f"{prompt!r}: {word!r} followed by plural {name!r}; the official parser misaligns counts here"
                )
            else:
                found.append((singular[plural.index(name)], _NUMBER_VALUES[word]))
    if not found:
        raise PromptParseError(f"{prompt!r}: no '<number word> <known object>' found (official: division by zero)")
    return [(NUMERACY_ALIASES.get(name, name), count) for name, count in found]


def _dup_overlap(b1: Sequence[float], b2: Sequence[float]) -> bool:
    """Official duplicate test (+1 pixel convention): IoU > 0.9, or either box > 90% covered by the overlap."""
    inter = max(0.0, min(b1[2], b2[2]) - max(b1[0], b2[0]) + 1) * max(0.0, min(b1[3], b2[3]) - max(b1[1], b2[1]) + 1)
    area1 = (b1[2] - b1[0] + 1) * (b1[3] - b1[1] + 1)
    area2 = (b2[2] - b2[0] + 1) * (b2[3] - b2[1] + 1)
    union = area1 + area2 - inter
    return (union > 0 and inter / union > 0.9) or (area1 > 0 and inter / area1 > 0.9) or (
        area2 > 0 and inter / area2 > 0.9
    )


def dedupe_detections(detections: Iterable[Any], *, score_threshold: float | None = 0.5) -> list[tuple[str, tuple]]:
    """(label, box) kept by the numeracy duplicate removal: a detection is dropped when an earlier kept one has
    the same label and overlaps it (``_dup_overlap``)."""
    kept: list[_Det] = []
    for det in _as_dets(detections, score_threshold):
        if not any(k.label == det.label and _dup_overlap(det.box, k.box) for k in kept):
            kept.append(det)
    return [(k.label, k.box) for k in kept]


def numeracy_score(
    targets: Sequence[tuple[str, int]],
    detections: Iterable[Any],
    *,
    score_threshold: float | None = 0.5,
) -> float:
    """Numeracy image score: each of the K targets weighs 1/K; +0.5/K if present, +0.5/K more if the count matches.

    Detections are de-duplicated first (``dedupe_detections``). A target absent by exact name renames every
    kept label that contains it as a substring to the target name (official quirk: the renaming persists for
    the following targets); the count is the number of kept labels equal to the name.
    """
    if not targets:
        raise UsageError("numeracy_score needs at least one target (official: division by zero)")
    names = [label for label, _ in dedupe_detections(detections, score_threshold=score_threshold)]
    weight = 1.0 / len(targets)
    score = 0.0
    for name, count in targets:
        name = NUMERACY_ALIASES.get(name, name)
        if name not in names:
            names = [name if name in label else label for label in names]
        if name in names:
            score += 0.5 * weight
            if names.count(name) == count:
                score += 0.5 * weight
    return score


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
