"""T2I-CompBench(++) scoring rules against hand-computed values (docs/protocols.md §2), quirks included.

Language-dependent tests pin ``method="rules"`` (the spaCy-free stand-in): their expected outputs are
hand-written, spaCy-style noun chunks / tags for real prompts of the val files (not checked against spaCy,
which is not installed here).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from irisbench.protocols import compbench as cb
from irisbench.protocols.geneval import Detection

R = "rules"

# ------------------------------------------------------------------------------------- noun phrases

NOUN_PHRASE_CASES = {
    # color
    "a blue boat and a red book": ["a blue boat", "a red book"],
    "a green cup and a blue cell phone": ["a green cup", "a blue cell phone"],
    "a red horse and a brown orange": ["a red horse", "a brown orange"],
    "A black and white cat sits in a white sink.": ["A black and white cat", "a white sink"],
    "a white bathroom with a black and white shower curtain": ["a white bathroom", "a black and white shower curtain"],
    "A bathroom with green tile and a red shower curtain.": ["A bathroom", "green tile", "a red shower curtain"],
    # shape
    "a triangular slice of cheese and a rectangular cheese board": [
        "a triangular slice", "cheese", "a rectangular cheese board",
    ],
    "a conical Christmas tree and a pentagonal tree skirt": ["a conical Christmas tree", "a pentagonal tree skirt"],
    "an oval sink and a rectangular mirror.": ["an oval sink", "a rectangular mirror"],
    # texture
    "rubber sole shoes and a fluffy teddy bear": ["rubber sole shoes", "a fluffy teddy bear"],
    "a metallic spoon and wooden chopsticks": ["a metallic spoon", "wooden chopsticks"],
    "The glass baking dish and wooden spoon bake the metallic lasagna for the fluffy dinner party.": [
        "The glass baking dish", "wooden spoon", "the metallic lasagna", "the fluffy dinner party",
    ],
    # complex ("top" and "the left" are dropped)
    "The red hat was on top of the brown coat rack.": ["The red hat", "the brown coat rack"],
    "The fluffy cat is on the left of the soft pillow.": ["The fluffy cat", "the soft pillow"],
    "The black phone was resting on the brown charger.": ["The black phone", "the brown charger"],
    "The smooth, glossy surface of the lake reflected the fiery colors of the sunset, a serene oasis of "
    "tranquility and reflection.": [
        "The smooth, glossy surface", "the lake", "the fiery colors", "the sunset", "a serene oasis", "tranquility",
        "reflection",
    ],
    "The silky, flowing fabric of the ballgown swirled around the dancer's feet, as she glided across the "
    "ballroom floor.": ["The silky, flowing fabric", "the ballgown", "the dancer's feet", "she", "the ballroom floor"],
    # non-spatial / spatial / numeracy
    "A cat is wearing a collar with a bell on it.": ["A cat", "a collar", "a bell", "it"],
    "A man is holding a soldering iron and repairing a broken electronic device.": [
        "A man", "a soldering iron", "a broken electronic device",
    ],
    "A woman is holding a paint can and redecorating a room.": ["A woman", "a paint can", "a room"],
    "a cup on the top of a butterfly": ["a cup", "the top", "a butterfly"],  # "the top" is not in the drop list
    "a airplane on the right of a person": ["a airplane", "a person"],
    "two cups, three paintings, four lamps, and four bananas decorated the art studio": [
        "two cups", "three paintings", "four lamps", "four bananas", "the art studio",
    ],
}


@pytest.mark.parametrize("prompt", list(NOUN_PHRASE_CASES))
def test_rule_noun_phrases_on_real_prompts(prompt):
    phrases, method = cb.noun_phrases(prompt, method=R)
    assert method == "rules"
    assert phrases == NOUN_PHRASE_CASES[prompt]


def test_noun_phrase_drop_list_is_exact_text():
    # "top" (from "on top of") and "the left" are dropped; "The left" would not be (case-sensitive).
    assert cb.noun_phrases("a cat on top of a dog", method=R)[0] == ["a cat", "a dog"]
    assert cb.noun_phrases("a cat on the side of a dog", method=R)[0] == ["a cat", "a dog"]


def test_method_validation():
    with pytest.raises(ValueError, match="method"):
        cb.noun_phrases("a cat", method="nltk")
    if not cb.spacy_available():
        with pytest.raises(RuntimeError, match="en_core_web_sm"):
            cb.noun_phrases("a cat", method="spacy")
        assert cb.noun_phrases("a cat")[1] == "rules"  # auto falls back


# ------------------------------------------------------------------------------------------ BLIP-VQA


def test_vqa_question_pre_question_normalisation():
    assert cb.vqa_question("A Red (big) book.") == "a red big book?"
    assert cb.vqa_question('the "shiny"; cat: #1*~!') == "the shiny cat 1?"
    assert cb.vqa_question("a blue  car") == "a blue  car?"  # inner spaces are kept
    long_chunk = " ".join(["w"] * 60)
    assert cb.vqa_question(long_chunk) == " ".join(["w"] * 50)  # 50-word cut drops the "?" with the tail


def test_vqa_questions_per_slot():
    prompt = "The fluffy cat is on the left of the soft pillow."
    assert cb.vqa_questions(prompt, method=R) == ["the fluffy cat?", "the soft pillow?"]
    assert cb.vqa_questions(prompt, np_num=1, method=R) == ["the fluffy cat?"]


def test_vqa_phrase_score_is_rounded_ratio():
    assert cb.vqa_phrase_score(0.3, 0.1) == 0.75
    assert cb.vqa_phrase_score(2.0, 1.0) == 0.6667
    assert cb.vqa_phrase_score(1e-9, 1.0) == 0.0
    assert cb.vqa_phrase_score(0.012345, 0.987655) == 0.0123
    for bad in [(0.0, 0.0), (-0.1, 0.5), (math.nan, 0.5)]:
        with pytest.raises(ValueError):
            cb.vqa_phrase_score(*bad)


def test_blip_image_score_product_missing_slots_and_rounding():
    assert cb.blip_vqa_image_score([0.9, 0.8]) == 0.72
    assert cb.blip_vqa_image_score([0.5]) == 0.5  # the 7 missing slots count as 1
    assert cb.blip_vqa_image_score([]) == 1.0
    assert cb.blip_vqa_image_score([0.1234, 0.5678]) == 0.0701  # 0.07006652 -> 4 decimals
    assert cb.blip_vqa_image_score([0.5] * 9) == 0.0039  # only np_num=8 slots: 0.5**8 = 0.00390625
    assert cb.blip_vqa_image_score([0.5] * 9, np_num=9) == 0.002  # 0.001953125
    # float32 like the official torch tensor: 0.5 * float32(0.0001) = 4.99999987e-05 -> "0.0000"
    # (float64 would give 5.0000000000000002e-05 -> "0.0001").
    assert cb.blip_vqa_image_score([0.5, 0.0001]) == 0.0
    with pytest.raises(ValueError):
        cb.blip_vqa_image_score([1.2])
    with pytest.raises(ValueError):
        cb.blip_vqa_image_score([0.5], np_num=0)


# ---------------------------------------------------------------------------------------- 2D spatial


def test_spatial_objects_simple_and_person_alias():
    assert cb.spatial_objects("a giraffe next to a lamp", method=R) == ("giraffe", "lamp")
    assert cb.spatial_objects("a girl on the top of a frog", method=R) == ("person", "frog")
    assert cb.spatial_objects("a cell phone on the left of a man", method=R) == ("cell", "person")  # first NOUN
    assert cb.spatial_objects("next to", method=R) is None  # no noun: no objects (official: IndexError)


def test_spatial_objects_complex_mode():
    assert cb.spatial_objects("The red apple was next to the oval plate.", complex=True, method=R) == (
        "apple", "plate",
    )
    assert cb.spatial_objects("The black chair was on the left of the white table.", complex=True, method=R) == (
        "chair", "table",
    )
    # The first NOUN after the phrase is the compound's first word, as spaCy tags "coat rack".
    assert cb.spatial_objects("The red hat was on top of the brown coat rack.", complex=True, method=R) == (
        "hat", "coat",
    )
    # No listed preposition ("above" is not one) -> None; two phrases -> 4 names -> None.
    no_phrase = "The rectangular mirror was hung above the black dresser."
    assert cb.spatial_objects(no_phrase, complex=True, method=R) is None
    assert cb.spatial_objects("The cat next to the dog was near the tree.", complex=True, method=R) is None
    assert cb.spatial_objects("The girl sat next to the man.", complex=True, method=R) == ("person", "person")


def test_locality_is_first_listed_substring():
    assert cb.locality("a dog on the top of a desk") == "on the top of"
    assert cb.locality("The red hat was on top of the brown coat rack.") == "on top of"
    assert cb.locality("a cat near a dog on side of a bed") == "on side of"  # list order, not prompt order
    assert cb.locality("a tree nearby a house") == "near"  # plain substring test
    assert cb.locality("a cat above a dog") is None
    assert cb.locality("a fish in front of a book", cb.SPATIAL_3D_LOCALITIES) == "in front of"
    assert cb.locality("a chair hidden by a mouse", cb.SPATIAL_3D_LOCALITIES) == "hidden"


def test_position_score_2d_table():
    left_box, right_box = (0, 0, 100, 100), (300, 0, 400, 100)  # centres (50, 50), (350, 50)
    far = (300, 300, 400, 400)
    # next to / near / on side of: |dx| < 150 or |dy| < 150 -> 1; else 150 / max(|dx|, |dy|).
    for where in ("next to", "near", "on side of"):
        assert cb.position_score_2d(where, left_box, right_box) == 1.0
        assert cb.position_score_2d(where, left_box, far) == 0.5  # dx = dy = 300
    assert cb.position_score_2d("near", (0, 0, 100, 100), (400, 200, 500, 300)) == 0.375  # 150/400
    # on the right of: box 1 right of box 2 (dx = c2x - c1x < 0), horizontal dominant, IoU < 0.1 -> 1.
    assert cb.position_score_2d("on the right of", right_box, left_box) == 1.0
    assert cb.position_score_2d("on the right of", left_box, right_box) == 0.0
    # Overlap: box1 (50,0,150,100) vs box2 (0,0,100,100): IoU = 5000/15000 (no +1) -> 0.1 / (1/3) = 0.3.
    assert cb.position_score_2d("on the right of", (50, 0, 150, 100), (0, 0, 100, 100)) == pytest.approx(0.3)
    # |dx| == |dy| is not "horizontal dominant" -> 0.
    assert cb.position_score_2d("on the right of", (100, 100, 200, 200), (0, 0, 100, 100)) == 0.0
    assert cb.position_score_2d("on the left of", left_box, right_box) == 1.0
    assert cb.position_score_2d("on the left of", (0, 0, 100, 100), (50, 0, 150, 100)) == pytest.approx(0.3)
    # on the bottom of: box 1 below box 2 (dy < 0); on the top of: box 1 above (dy > 0).
    top, bottom = (0, 0, 100, 100), (0, 300, 100, 400)
    assert cb.position_score_2d("on the bottom of", bottom, top) == 1.0
    assert cb.position_score_2d("on the bottom of", top, bottom) == 0.0
    assert cb.position_score_2d("on the top of", top, bottom) == 1.0
    assert cb.position_score_2d("on the top of", bottom, top) == 0.0
    # "on top of" and None are not in the table: always 0.
    assert cb.position_score_2d("on top of", top, bottom) == 0.0
    assert cb.position_score_2d(None, top, bottom) == 0.0
    # Degenerate boxes: zero union -> IoU 0 (official would divide by zero).
    assert cb.position_score_2d("on the left of", (0, 0, 0, 0), (10, 0, 10, 0)) == 1.0


def test_unidet_2d_score_combination_and_cut():
    cat, dog = ("cat", (0, 0, 100, 100), 0.9), ("dog", (300, 0, 400, 100), 0.8)
    prompt = "a dog on the right of a cat"
    assert cb.unidet_2d_score(prompt, [cat, dog], method=R) == pytest.approx(0.25 * 0.8 + 0.25 * 0.9 + 0.5)
    # Wrong side: 0.25 * (0.8 + 0.9) = 0.425 < 0.5 -> 0.
    assert cb.unidet_2d_score("a dog on the left of a cat", [cat, dog], method=R) == 0.0
    # Only one object found: 0.25 * s <= 0.25 -> always cut to 0.
    assert cb.unidet_2d_score(prompt, [dog], method=R) == 0.0
    assert cb.unidet_2d_score(prompt, [], method=R) == 0.0
    # Detection objects with .label/.box/.score work too.
    dets = [Detection("cat", (0, 0, 100, 100), 0.9), Detection("dog", (300, 0, 400, 100), 0.8)]
    assert cb.unidet_2d_score(prompt, dets, method=R) == pytest.approx(0.925)


def test_unidet_2d_first_most_confident_match_and_threshold():
    cat = ("cat", (0, 0, 100, 100), 0.9)
    dog_weak_overlapping = ("dog", (0, 0, 100, 100), 0.7)  # position 0 if chosen
    dog_strong_right = ("dog", (300, 0, 400, 100), 0.95)
    got = cb.unidet_2d_score("a dog on the right of a cat", [dog_weak_overlapping, cat, dog_strong_right], method=R)
    assert got == pytest.approx(0.25 * 0.95 + 0.25 * 0.9 + 0.5)
    # Scores at the detector threshold (0.5) are dropped: score must be > 0.5.
    weak_cat = ("cat", (0, 0, 100, 100), 0.5)
    assert cb.unidet_2d_score("a dog on the right of a cat", [weak_cat, dog_strong_right], method=R) == 0.0
    assert cb.unidet_2d_score(
        "a dog on the right of a cat", [weak_cat, dog_strong_right], score_threshold=None, method=R
    ) == pytest.approx(0.25 * 0.95 + 0.25 * 0.5 + 0.5)


def test_unidet_2d_person_alias_and_exact_label():
    dets = [("person", (0, 0, 100, 100), 0.9), ("horse", (300, 0, 400, 100), 0.9)]
    assert cb.unidet_2d_score("a girl on the left of a horse", dets, method=R) == pytest.approx(0.95)
    # Labels must equal the name exactly in 2D ("horses" does not match "horse").
    dets = [("person", (0, 0, 100, 100), 0.9), ("horses", (300, 0, 400, 100), 0.9)]
    assert cb.unidet_2d_score("a girl on the left of a horse", dets, method=R) == 0.0


def test_complex_on_top_of_always_zero_unless_perfect_scores():
    prompt = "The red hat was on top of the brown coat rack."
    boxes = [("hat", (0, 0, 100, 100), 0.99), ("coat", (0, 300, 100, 400), 0.99)]
    assert cb.unidet_2d_score(prompt, boxes, complex=True, method=R) == 0.0  # 0.495 < 0.5
    perfect = [("hat", (0, 0, 100, 100), 1.0), ("coat", (0, 300, 100, 400), 1.0)]
    assert cb.unidet_2d_score(prompt, perfect, complex=True, method=R) == 0.5  # 0.5 is not < 0.5


def test_bad_detections_rejected():
    with pytest.raises(ValueError, match=r"detections\[0\]"):
        cb.unidet_2d_score("a dog next to a cat", [("dog", (0, 0, 1), 0.9)], method=R)
    with pytest.raises(ValueError, match=r"detections\[0\]"):
        cb.unidet_2d_score("a dog next to a cat", [("dog",)], method=R)


# ---------------------------------------------------------------------------------------- 3D spatial


def _depth_column_two() -> np.ndarray:
    depth = np.zeros((10, 10), dtype=np.float32)
    depth[:, 2] = 255.0
    return depth


def test_unidet_3d_uses_transposed_depth_indexing():
    # box1 x 0..4, y 0..2; box2 x 0..4, y 0..3: IoU = 8 / 12 > 0.5.
    # Official indexing depth[x0:x1, y0:y1]: box1 reads columns 0-1 (mean 0), box2 columns 0-2 (mean 85),
    # so box1 is farther -> "behind" holds. Row-major indexing would give equal means (63.75) -> 0.
    depth = _depth_column_two()
    dets = [("cat", (0, 0, 4, 2), 0.9), ("dog", (0, 0, 4, 3), 0.8)]
    assert cb.unidet_3d_score("a cat behind a dog", dets, depth, method=R) == pytest.approx(0.225 + 0.2 + 0.5)
    assert cb.unidet_3d_score("a cat hidden by a dog", dets, depth, method=R) == pytest.approx(0.925)
    # "in front of" needs depth1 > depth2: no position credit, and no 0.5 cut (0.425 is kept).
    assert cb.unidet_3d_score("a cat in front of a dog", dets, depth, method=R) == pytest.approx(0.425)
    assert cb.position_score_3d("behind", (0, 0, 4, 2), (0, 0, 4, 3), depth) == 1.0
    assert cb.position_score_3d("behind", (0, 0, 4, 2), (0, 0, 4, 3), depth.T) == 0.0  # means equal


def test_position_score_3d_iou_table():
    depth = _depth_column_two()
    # Partial overlap: box1 (0,0,4,2) vs box2 (2,0,6,3): IoU = 4 / 16 = 0.25 -> 0.25 / 0.5 = 0.5.
    # Depth: box1 columns 0-1 -> 0; box2 rows 2-5, columns 0-2 -> 85 -> box1 farther.
    assert cb.position_score_3d("behind", (0, 0, 4, 2), (2, 0, 6, 3), depth) == 0.5
    assert cb.position_score_3d("in front of", (0, 0, 4, 2), (2, 0, 6, 3), depth) == 0.0
    assert cb.position_score_3d("in front of", (2, 0, 6, 3), (0, 0, 4, 2), depth) == 0.5
    # IoU exactly 0.5 falls between the official branches -> 0.
    assert cb.position_score_3d("behind", (0, 0, 4, 2), (0, 0, 4, 1), np.zeros((10, 10))) == 0.0
    assert cb._iou_no_plus1((0, 0, 4, 2), (0, 0, 4, 1)) == 0.5
    # IoU 0 -> 0 whatever the depth.
    assert cb.position_score_3d("behind", (0, 0, 1, 1), (5, 5, 6, 6), depth) == 0.0
    # Unknown locality -> 0; an empty depth region gives NaN and no credit.
    assert cb.position_score_3d("next to", (0, 0, 4, 2), (0, 0, 4, 3), depth) == 0.0
    assert cb.position_score_3d("behind", (0, 0, 4, 2), (0, 0, 4, 3), np.zeros((0, 0))) == 0.0


def test_unidet_3d_substring_match_single_object_and_index_quirk():
    depth = np.zeros((10, 10))
    far = [("coffee cup", (0, 0, 1, 1), 0.9), ("dining table", (5, 5, 6, 6), 0.8)]
    assert cb.unidet_3d_score("a cup behind a table", far, depth, method=R) == pytest.approx(0.425)  # no cut
    assert cb.unidet_3d_score("a cup behind a table", far[:1], depth, method=R) == pytest.approx(0.225)
    assert cb.unidet_3d_score("a cup behind a table", far[1:], depth, method=R) == pytest.approx(0.2)
    assert cb.unidet_3d_score("a cup behind a table", [], depth, method=R) == 0.0
    # Two cats then a dog: the scan keeps overwriting the cat index until the dog is found -> second cat (0.8).
    dets = [("cat", (0, 0, 1, 1), 0.9), ("cat", (2, 2, 3, 3), 0.8), ("dog", (7, 7, 8, 8), 0.7)]
    assert cb.unidet_3d_score("a cat behind a dog", dets, depth, method=R) == pytest.approx(0.25 * 0.8 + 0.25 * 0.7)
    with pytest.raises(ValueError, match="2-D"):
        cb.unidet_3d_score("a cat behind a dog", dets, np.zeros((2, 2, 3)), method=R)


# ------------------------------------------------------------------------------------------ numeracy


def test_numeracy_targets_plural_aliases_and_counts():
    prompt = "two cups, three paintings, four lamps, and four bananas decorated the art studio"
    assert cb.numeracy_targets(prompt, method=R) == [("cup", 2), ("picture", 3), ("lamp", 4), ("banana", 4)]
    assert cb.numeracy_targets("one tent and three fish", method=R) == [("tent", 1), ("fish", 3)]
    assert cb.numeracy_targets("a man and two women", method=R) == [("person", 1), ("person", 2)]
    assert cb.numeracy_targets("four goldfish", method=R) == [("fish", 4)]
    assert cb.numeracy_targets("five televisions", method=R) == [("television", 5)]  # official alias is misspelt
    assert cb.numeracy_targets("seven shrimp", method=R) == [("shrimp", 7)]


def test_numeracy_targets_two_word_names_and_errors():
    pairs = [("teddy bear", "teddy bears"), ("cup", "cups")]
    assert cb.numeracy_targets("two teddy bears and a cup", objects=pairs, method=R) == [("teddy bear", 2), ("cup", 1)]
    assert cb.numeracy_targets("a teddy bear", objects=pairs, method=R) == [("teddy bear", 1)]
    with pytest.raises(cb.PromptParseError, match="singular-only"):
        cb.numeracy_targets("two cup", method=R)
    with pytest.raises(cb.PromptParseError, match="misaligns"):
        cb.numeracy_targets("a cups", method=R)
    with pytest.raises(cb.PromptParseError, match="no '<number word>"):
        cb.numeracy_targets("three dragons", method=R)
    with pytest.raises(cb.PromptParseError):
        cb.numeracy_targets("Two cups", method=R)  # number words are matched case-sensitively


def _box(x: float) -> tuple[float, float, float, float]:
    return (x, 0.0, x + 50.0, 50.0)


def test_numeracy_score_weights_presence_and_count():
    two_cups = [("cup", _box(0), 0.9), ("cup", _box(100), 0.8)]
    assert cb.numeracy_score([("cup", 2)], two_cups) == 1.0
    assert cb.numeracy_score([("cup", 1)], two_cups) == 0.5
    assert cb.numeracy_score([("cup", 3)], two_cups) == 0.5
    assert cb.numeracy_score([("cup", 2)], []) == 0.0
    assert cb.numeracy_score([("cup", 2), ("dog", 1)], two_cups) == 0.5
    assert cb.numeracy_score([("cup", 2), ("dog", 1), ("cat", 1)], two_cups + [("cat", _box(300), 0.9)]) == (
        pytest.approx(2 / 3)
    )
    assert cb.numeracy_score([("painting", 1)], [("picture", _box(0), 0.9)]) == 1.0  # alias at scoring
    with pytest.raises(ValueError):
        cb.numeracy_score([], two_cups)


def test_numeracy_duplicate_removal():
    # Near-identical boxes: IoU (+1) = 10000 / 10201 > 0.9 -> one cup.
    dup = [("cup", (0, 0, 100, 100), 0.9), ("cup", (1, 1, 100, 100), 0.8)]
    assert cb.numeracy_score([("cup", 1)], dup) == 1.0
    assert cb.numeracy_score([("cup", 2)], dup) == 0.5
    # A box > 90% inside another of the same name is a duplicate; of another name it is not.
    nested = [("cup", (0, 0, 200, 200), 0.9), ("cup", (10, 10, 50, 50), 0.8)]
    assert cb.numeracy_score([("cup", 1)], nested) == 1.0
    assert len(cb.dedupe_detections([("cup", (0, 0, 200, 200), 0.9), ("bowl", (10, 10, 50, 50), 0.8)])) == 2
    # The +1 convention decides: (0,0,10,10) vs (1,0,11,10) covers 110/121 > 0.9 with +1 (0.9 without).
    plus_one = [("cup", (0, 0, 10, 10), 0.9), ("cup", (1, 0, 11, 10), 0.8)]
    assert cb.numeracy_score([("cup", 1)], plus_one) == 1.0


def test_numeracy_substring_renaming_persists():
    two_tomcats = [("tomcat", _box(0), 0.9), ("tomcat", _box(100), 0.9)]
    assert cb.numeracy_score([("cat", 2)], two_tomcats) == 1.0
    # "cat" renames both labels; "tomcat" then finds nothing left: 0.5 * 1/2 (present, wrong count) + 0.
    assert cb.numeracy_score([("cat", 1), ("tomcat", 1)], two_tomcats) == 0.25


# ---------------------------------------------------------------------------------------- CLIP, 3-in-1


def test_clip_text():
    prompt = "The red apple was next to the oval plate."
    assert cb.clip_text(prompt) == prompt
    assert cb.clip_text(prompt, complex=True, method=R) == "The apple was next to the plate ."
    assert cb.clip_text("The warm, gooey cheese melted.", complex=True, method=R) == "The , cheese melted ."
    assert cb.mean_score([0.31, 0.29]) == pytest.approx(0.30)
    with pytest.raises(ValueError, match="non-finite"):
        cb.mean_score([0.3, math.nan])
    with pytest.raises(ValueError, match="no values"):
        cb.mean_score([])


def test_three_in_one_table_and_normalisation():
    spatial = {"the red apple was next to the oval plate"}
    action = {"The fluffy pillows cushioned the tired head and the hard couch."}  # raw form is normalised too
    kw = dict(spatial_prompts=spatial, action_prompts=action)
    assert cb.three_in_one("The red apple was next to the oval plate.", 0.6, 0.4, 0.3, **kw) == 0.5
    assert cb.three_in_one("The RED apple was next to the oval plate. Extra.", 0.6, 0.4, 0.3, **kw) == 0.5
    assert cb.three_in_one("The fluffy pillows cushioned the tired head and the hard couch.", 0.6, 0.4, 0.3,
                           **kw) == pytest.approx(0.45)
    assert cb.three_in_one("Something else entirely.", 0.6, 0.4, 0.3, **kw) == pytest.approx(1.3 / 3)


# -------------------------------------------------------------------------------------------- summary


def test_summarize_mean_of_6():
    scores = {"color": [0.6, 0.8], "shape": [0.5], "texture": [0.4], "spatial": [0.2], "non_spatial": [0.3],
              "complex": [0.3], "numeracy": [0.9]}
    out = cb.summarize(scores)
    assert out["per_category"]["color"] == {"mean": pytest.approx(0.7), "n": 2, "rule": "blip_vqa"}
    assert out["per_category"]["numeracy"]["mean"] == 0.9
    assert out[cb.MEAN_OF_6_LABEL] == pytest.approx((0.7 + 0.5 + 0.4 + 0.2 + 0.3 + 0.3) / 6)  # numeracy excluded
    assert out["missing"] == []
    partial = cb.summarize({"color": [0.5], "3d_spatial": [0.4]})
    assert partial[cb.MEAN_OF_6_LABEL] is None
    assert partial["missing"] == ["shape", "texture", "spatial", "non_spatial", "complex"]
    with pytest.raises(ValueError, match="unknown"):
        cb.summarize({"colour": [0.5]})
    with pytest.raises(ValueError, match="no values"):
        cb.summarize({"color": []})


def test_categories_table():
    assert cb.MEAN_OF_6 == ("color", "shape", "texture", "spatial", "non_spatial", "complex")
    assert {c.rule for c in cb.CATEGORIES.values()} == {
        "blip_vqa", "unidet_2d", "clip", "three_in_one", "unidet_3d", "numeracy",
    }
    assert cb.CATEGORIES["numeracy"].in_mean_of_6 is False and cb.CATEGORIES["numeracy"].plus_plus_only
    assert cb.category_file("color") == "color_val.txt"
    assert cb.category_file("color", color_version="pre-2025-09") == "color_val.pre-2025-09.txt"
    assert cb.category_file("3d_spatial", color_version="pre-2025-09") == "3d_spatial_val.txt"
    with pytest.raises(ValueError):
        cb.category_file("colour")
    with pytest.raises(ValueError):
        cb.category_file("color", color_version="2024")
