"""T2I-CompBench's language analysis: POS-tagged tokens and noun chunks of a prompt.

The official code uses spaCy ``en_core_web_sm`` (noun chunks, NOUN/PROPN/ADJ tags, tokens). When spaCy and
that model import, it is used here too (``method="spacy"``). Otherwise a documented rule-based stand-in
(``method="rules"``) is used; it is an approximation, not a copy of spaCy:

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
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from irisbench.core.errors import MissingDependencyError, UsageError


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
