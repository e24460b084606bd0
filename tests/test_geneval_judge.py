"""GenEval rules (irisbench.protocols.geneval.judge / relation) against hand-computed cases."""

from __future__ import annotations

import pytest

from irisbench.protocols.geneval import Detection, MetadataError, Verdict, judge, relation

# ------------------------------------------------------------------------------------------- relation


def test_relation_straight_and_diagonal() -> None:
    a = (0.0, 0.0, 10.0, 10.0)
    assert relation(a, (30, 0, 40, 10)) == {"left of"}
    assert relation((30, 0, 40, 10), a) == {"right of"}
    assert relation(a, (0, 30, 10, 40)) == {"above"}
    assert relation((0, 30, 10, 40), a) == {"below"}
    # offset (-50, -50), shrunk by 2 each -> (-48, -48) / 70.71 = -0.679 on both axes
    assert relation(a, (50, 50, 60, 60)) == {"left of", "above"}
    # offset (-30, -1): y shrinks to 0, x -> -28 / 30.017 = -0.933
    assert relation(a, (30, 1, 40, 11)) == {"left of"}


def test_relation_inside_margin_is_empty() -> None:
    # offset (-1, -1), margin 0.1 * (10 + 10) = 2 on each axis -> both shrunk to 0
    assert relation((0, 0, 10, 10), (1, 1, 11, 11)) == set()
    assert relation((0, 0, 10, 10), (0, 0, 10, 10)) == set()  # zero offset: no division by zero
    # with threshold 0 the same 1-px offset is a diagonal relation
    assert relation((0, 0, 10, 10), (1, 1, 11, 11), threshold=0.0) == {"left of", "above"}


def test_relation_margin_near_boundary_by_hand() -> None:
    b = (0.0, 0.0, 10.0, 10.0)  # centre (5, 5), size 10 x 10
    # A centre (-7, 21): offset (-12, 16), |offset| = 20; margin 0.1 * (10 + 10) = 2 per axis.
    # dx = -(12 - 2) / 20 = -0.5 exactly -> NOT "left of" (strict); dy = (16 - 2) / 20 = 0.7 -> below.
    a = (-12.0, 16.0, -2.0, 26.0)
    assert relation(a, b) == {"below"}
    # Without the margin dx would be -12 / 20 = -0.6: the margin is what removes "left of".
    assert relation(a, b, threshold=0.0) == {"left of", "below"}
    # Move A up by 0.1: offset (-12, 15.9), |o| = 19.920, dx = -10 / 19.920 = -0.502 -> left of too.
    a_up = (-12.0, 15.9, -2.0, 25.9)
    assert relation(a_up, b) == {"left of", "below"}
    # Margin uses the sizes of both boxes: a 30-px-wide A widens the x margin to 0.1 * 40 = 4,
    # dx = -(12 - 4) / 20 = -0.4 -> no "left of" even at threshold 0.1.
    wide = (-22.0, 16.0, 8.0, 26.0)  # centre (-7, 21), width 30
    assert relation(wide, b) == {"below"}


def _box(cx: float, cy: float, size: float = 10.0) -> tuple[float, float, float, float]:
    return (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)


@pytest.mark.parametrize(("relation_name", "at_boundary", "past_boundary", "other"), [
    # A's centre relative to B's at (0, 0); both 10 x 10, so the margin is 0.1 * 20 = 2 per axis.
    # On the boundary: |offset| = hypot(12, 16) = 20, the tested axis shrinks 12 -> 10, 10 / 20 = 0.5 exactly
    # (not past: the rule is strict). Past it: 12.2 -> 10.2 / hypot(12.2, 16) = 0.507.
    ("left of", (-12.0, 16.0), (-12.2, 16.0), "below"),
    ("right of", (12.0, 16.0), (12.2, 16.0), "below"),
    ("above", (16.0, -12.0), (16.0, -12.2), "right of"),
    ("below", (16.0, 12.0), (16.0, 12.2), "right of"),
])
def test_every_relation_at_its_boundary(relation_name: str, at_boundary: tuple[float, float],
                                        past_boundary: tuple[float, float], other: str) -> None:
    b = _box(0.0, 0.0)
    # the other axis: (16 - 2) / 20 = 0.7, well past its boundary
    assert relation(_box(*at_boundary), b) == {other}
    assert relation(_box(*past_boundary), b) == {relation_name, other}
    # the margin matters: without it the boundary case is already past (12 / 20 = 0.6)
    assert relation(_box(*at_boundary), b, threshold=0.0) == {relation_name, other}


@pytest.mark.parametrize(("dx", "dy", "expected"), [
    (-0.0009, 0.0, set()),  # both shrunk components below 1e-3: no relation at all
    (-0.0011, 0.0, {"left of"}),  # just past the cut: the direction counts, however small
    (0.0, 0.0009, set()),
    (0.0, 0.0011, {"below"}),
    (0.0009, -0.0009, set()),
])
def test_no_relation_cut_at_its_boundary(dx: float, dy: float, expected: set[str]) -> None:
    assert relation(_box(dx, dy), _box(0.0, 0.0), threshold=0.0) == expected
    # with the default margin the same box pushed out by the margin (2 per axis) sits at the same cut
    shift = (dx + (2.0 if dx > 0 else -2.0 if dx < 0 else 0.0), dy + (2.0 if dy > 0 else -2.0 if dy < 0 else 0.0))
    if not expected:
        assert relation(_box(*shift), _box(0.0, 0.0)) == set()


# ----------------------------------------------------------------------------------------------- judge


def det(label: str, box=(0.0, 0.0, 10.0, 10.0), score: float = 0.95, color: str | None = None) -> Detection:
    return Detection(label=label, box=tuple(float(v) for v in box), score=score, color=color)


SINGLE_CAT = {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"}


def test_single_object_threshold_is_strict() -> None:
    assert judge(SINGLE_CAT, [det("cat", score=0.3)]) == Verdict(False, "expected cat>=1, found 0")
    assert judge(SINGLE_CAT, [det("cat", score=0.3000001)]) == Verdict(True, "")
    assert judge(SINGLE_CAT, []) == Verdict(False, "expected cat>=1, found 0")
    assert judge(SINGLE_CAT, [det("dog")]).correct is False  # other classes do not help
    # extra objects are allowed
    assert judge(SINGLE_CAT, [det("dog"), det("cat", score=0.31), det("cat", score=0.99)]).correct
    # the cut is a parameter
    assert judge(SINGLE_CAT, [det("cat", score=0.45)], threshold=0.5).correct is False


def test_two_object_reasons_joined_by_newline() -> None:
    meta = {"tag": "two_object", "include": [{"class": "fork", "count": 1}, {"class": "knife", "count": 1}],
            "prompt": "a photo of a fork and a knife"}
    assert judge(meta, [det("fork"), det("knife", score=0.4)]) == Verdict(True, "")
    v = judge(meta, [det("cup")])
    assert v == Verdict(False, "expected fork>=1, found 0\nexpected knife>=1, found 0")
    assert judge(meta, [det("knife")]).reason == "expected fork>=1, found 0"


COUNT_TWO_DOGS = {"tag": "counting", "include": [{"class": "dog", "count": 2}],
                  "exclude": [{"class": "dog", "count": 3}], "prompt": "a photo of two dogs"}


def test_counting_uses_counting_threshold() -> None:
    two = [det("dog", score=0.95), det("dog", score=0.91)]
    assert judge(COUNT_TWO_DOGS, two) == Verdict(True, "")
    # an extra low-score dog (0.85 < 0.9) is ignored -> still correct
    assert judge(COUNT_TWO_DOGS, [*two, det("dog", score=0.85)]) == Verdict(True, "")
    # exactly 0.9 is not kept either
    assert judge(COUNT_TWO_DOGS, [*two, det("dog", score=0.9)]).correct
    # an extra high-score dog -> wrong through the exclude clause
    assert judge(COUNT_TWO_DOGS, [*two, det("dog", score=0.97)]) == Verdict(False, "expected dog<3, found 3")
    # a dog at 0.85 does not count towards the include either (but would under the 0.3 cut)
    v = judge(COUNT_TWO_DOGS, [det("dog", score=0.95), det("dog", score=0.85)])
    assert v == Verdict(False, "expected dog>=2, found 1")
    low = [det("dog", score=0.95), det("dog", score=0.85)]
    assert judge(COUNT_TWO_DOGS, low, counting_threshold=0.3).correct
    # the counting cut only applies to the counting tag
    two_obj = {"tag": "two_object", "include": [{"class": "dog", "count": 1}, {"class": "cat", "count": 1}],
               "prompt": "a photo of a dog and a cat"}
    assert judge(two_obj, [det("dog", score=0.5), det("cat", score=0.5)]).correct


def test_max_objects_truncates_before_exclude() -> None:
    meta = {"tag": "counting", "include": [{"class": "cat", "count": 16}],
            "exclude": [{"class": "cat", "count": 17}], "prompt": "a photo of sixteen cats"}
    seventeen = [det("cat", box=(i, 0, i + 5, 5), score=0.91 + i * 0.001) for i in range(17)]
    # only 16 are kept, so "cat >= 17" never fires: officially correct
    assert judge(meta, seventeen) == Verdict(True, "")
    assert judge(meta, seventeen, max_objects=17) == Verdict(False, "expected cat<17, found 17")
    # 16 kept only after the cut: 17 detections with 2 below the cut leave 15
    mixed = seventeen[2:] + [det("cat", score=0.2), det("cat", score=0.1)]
    assert judge(meta, mixed) == Verdict(False, "expected cat>=16, found 15")


def test_exclude_clauses_are_ored() -> None:
    meta = {"tag": "counting", "include": [{"class": "cat", "count": 1}],
            "exclude": [{"class": "cat", "count": 2}, {"class": "dog", "count": 1}],
            "prompt": "a photo of one cat"}
    assert judge(meta, [det("cat")]).correct
    assert judge(meta, [det("cat"), det("dog")]) == Verdict(False, "expected dog<1, found 1")
    v = judge(meta, [det("cat"), det("cat"), det("dog")])
    assert v == Verdict(False, "expected cat<2, found 2\nexpected dog<1, found 1")


COLOR_CAR = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}],
             "prompt": "a photo of a red car"}


def test_colors_checks_only_the_top_instance() -> None:
    assert judge(COLOR_CAR, [det("car", color="red")]) == Verdict(True, "")
    # wrong color on the most confident car, right color on a lower-score car: wrong, as officially
    v = judge(COLOR_CAR, [det("car", score=0.5, color="red"), det("car", score=0.9, color="blue")])
    assert v == Verdict(False, "expected red car>=1, found 0 red; and 1 blue")
    # the reverse is correct
    assert judge(COLOR_CAR, [det("car", score=0.9, color="red"), det("car", score=0.5, color="blue")]).correct
    # unknown color (None) never matches and is left out of the tally
    v = judge(COLOR_CAR, [det("car", color=None)])
    assert v == Verdict(False, "expected red car>=1, found 0 red; and ")
    # car missing: the count reason, no color reason
    assert judge(COLOR_CAR, [det("bus", color="red")]) == Verdict(False, "expected car>=1, found 0")


def test_color_tally_in_geneval_color_order() -> None:
    meta = {"tag": "colors", "include": [{"class": "car", "count": 3, "color": "red"}], "prompt": "x"}
    cars = [det("car", score=0.9, color="white"), det("car", score=0.8, color="red"),
            det("car", score=0.7, color="orange"), det("car", score=0.6, color="red")]
    # only the top 3 are classified: white, red, orange; tally follows red, orange, ..., white
    v = judge(meta, cars)
    assert v == Verdict(False, "expected red car>=3, found 1 red; and 1 red, 1 orange, 1 white")


def test_equal_scores_keep_reversed_input_order() -> None:
    # documented tie rule: np.argsort(kind="stable")[::-1] -> the later detection comes first
    cars = [det("car", score=0.5, color="red"), det("car", score=0.5, color="blue")]
    assert judge(COLOR_CAR, cars).correct is False
    assert judge(COLOR_CAR, cars[::-1]).correct is True


def test_color_attr_both_objects() -> None:
    meta = {"tag": "color_attr", "include": [{"class": "bus", "count": 1, "color": "green"},
                                             {"class": "microwave", "count": 1, "color": "purple"}],
            "prompt": "a photo of a green bus and a purple microwave"}
    good = [det("bus", color="green"), det("microwave", color="purple")]
    assert judge(meta, good).correct
    swapped = [det("bus", color="purple"), det("microwave", color="green")]
    v = judge(meta, swapped)
    assert v == Verdict(
        False,
        "expected green bus>=1, found 0 green; and 1 purple\n"
        "expected purple microwave>=1, found 0 purple; and 1 green",
    )


DOG_LEFT_OF_CAT = {"tag": "position",
                   "include": [{"class": "cat", "count": 1},
                               {"class": "dog", "count": 1, "position": ["left of", 0]}],
                   "prompt": "a photo of a dog left of a cat"}


def test_position_correct_and_diagonal() -> None:
    cat = det("cat", box=(50, 50, 60, 60))
    assert judge(DOG_LEFT_OF_CAT, [cat, det("dog", box=(0, 50, 10, 60))]) == Verdict(True, "")
    # diagonal up-left: both "left of" and "above" hold, so "left of" is satisfied
    assert judge(DOG_LEFT_OF_CAT, [cat, det("dog", box=(0, 0, 10, 10))]).correct
    above = {**DOG_LEFT_OF_CAT, "include": [{"class": "cat", "count": 1},
                                            {"class": "dog", "count": 1, "position": ["above", 0]}]}
    assert judge(above, [cat, det("dog", box=(0, 0, 10, 10))]).correct


def test_position_wrong_relation_reasons() -> None:
    cat = det("cat", box=(50, 50, 60, 60))
    v = judge(DOG_LEFT_OF_CAT, [cat, det("dog", box=(100, 50, 110, 60))])
    assert v == Verdict(False, "expected dog left of target, found right of target")
    # overlapping: no relation at all -> empty join
    v = judge(DOG_LEFT_OF_CAT, [cat, det("dog", box=(51, 51, 61, 61))])
    assert v == Verdict(False, "expected dog left of target, found  target")
    # diagonal down-right: relations listed in the fixed order
    v = judge(DOG_LEFT_OF_CAT, [cat, det("dog", box=(100, 100, 110, 110))])
    assert v == Verdict(False, "expected dog left of target, found right of and below target")
    # the margin rule decides the near-boundary case (see test_relation_margin_near_boundary_by_hand)
    b = det("cat", box=(0, 0, 10, 10))
    assert judge(DOG_LEFT_OF_CAT, [b, det("dog", box=(-12, 16, -2, 26))]).correct is False
    assert judge(DOG_LEFT_OF_CAT, [b, det("dog", box=(-12, 15.9, -2, 25.9))]).correct is True
    assert judge(DOG_LEFT_OF_CAT, [b, det("dog", box=(-12, 16, -2, 26))], position_threshold=0.0).correct


def test_position_uses_top_instances_only() -> None:
    cat = det("cat", box=(50, 50, 60, 60))
    dogs = [det("dog", box=(0, 50, 10, 60), score=0.9), det("dog", box=(100, 50, 110, 60), score=0.8)]
    assert judge(DOG_LEFT_OF_CAT, [cat, *dogs]).correct
    dogs_swapped = [det("dog", box=(0, 50, 10, 60), score=0.8), det("dog", box=(100, 50, 110, 60), score=0.9)]
    assert judge(DOG_LEFT_OF_CAT, [cat, *dogs_swapped]).correct is False


def test_position_when_target_clause_failed() -> None:
    v = judge(DOG_LEFT_OF_CAT, [det("dog")])
    assert v == Verdict(False, "expected cat>=1, found 0\nno target for dog to be left of")
    v = judge(DOG_LEFT_OF_CAT, [det("cat")])
    assert v == Verdict(False, "expected dog>=1, found 0")
    # a target that failed on color also counts as failed
    meta = {"tag": "position", "include": [{"class": "cat", "count": 1, "color": "red"},
                                           {"class": "dog", "count": 1, "position": ["left of", 0]}],
            "prompt": "x"}
    v = judge(meta, [det("cat", box=(50, 0, 60, 10), color="blue"), det("dog")])
    assert v == Verdict(False, "expected red cat>=1, found 0 red; and 1 blue\n"
                               "no target for dog to be left of")


def test_position_skipped_when_color_failed() -> None:
    meta = {"tag": "position", "include": [{"class": "cat", "count": 1},
                                           {"class": "dog", "count": 1, "color": "red",
                                            "position": ["left of", 0]}],
            "prompt": "x"}
    v = judge(meta, [det("cat", box=(0, 0, 10, 10)), det("dog", box=(100, 0, 110, 10), color="blue")])
    assert v == Verdict(False, "expected red dog>=1, found 0 red; and 1 blue")


def test_position_every_object_against_every_target() -> None:
    meta = {"tag": "position", "include": [{"class": "cat", "count": 2},
                                           {"class": "dog", "count": 1, "position": ["left of", 0]}],
            "prompt": "x"}
    cats = [det("cat", box=(50, 0, 60, 10)), det("cat", box=(80, 0, 90, 10))]
    assert judge(meta, [*cats, det("dog", box=(0, 0, 10, 10))]).correct
    # dog between the two cats: right of the first -> one reason only (the loop stops at the first miss)
    v = judge(meta, [*cats, det("dog", box=(65, 0, 75, 10))])
    assert v == Verdict(False, "expected dog left of target, found right of target")


def test_judge_rejects_position_without_earlier_group() -> None:
    meta = {"tag": "position", "include": [{"class": "dog", "count": 1, "position": ["left of", 0]}],
            "prompt": "x"}
    with pytest.raises(MetadataError, match=r"include\[0\]\.position"):
        judge(meta, [det("dog")])
