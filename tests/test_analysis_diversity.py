"""Per-prompt diversity: layouts counted by hand from hand-written detections, pixel hashes, feature distances."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from irisbench.analysis import AnalysisError, feature_diversity, layout_diversity, layout_key, pixel_diversity
from irisbench.analysis.diversity import prompt_diversity, summarize_diversity


def det(label: str, color: str | None, box: list[float]) -> dict:
    return {"label": label, "box": box, "score": 1.0, "color": color}


RED = det("circle", "red", [0.0, 0.0, 8.0, 8.0])  # centre (4, 4): cell (1, 1)
BLUE = det("square", "blue", [16.0, 16.0, 28.0, 28.0])  # centre (22, 22): cell (5, 5)
IMAGES = [  # prompt, detections
    (0, [RED, BLUE]),
    (0, [BLUE, RED]),  # same multiset, other order: same layout
    (0, [det("circle", "red", [1.0, 1.0, 9.0, 9.0]), BLUE]),  # centre (5, 5): still cell (1, 1)
    (0, [det("circle", "red", [4.0, 4.0, 12.0, 12.0]), BLUE]),  # centre (8, 8): cell (2, 2) -> new layout
    (1, []),
    (1, [det("triangle", "green", [24.0, 24.0, 36.0, 36.0])]),  # centre 30 -> cell 7 (clipped to the grid)
    (1, [det("triangle", None, [24.0, 24.0, 36.0, 36.0])]),  # no color: a different layout
    (1, [RED, RED]),
]


def records() -> pd.DataFrame:
    return pd.DataFrame([{"prompt_index": p, "sample_index": i, "tag": "t0" if p == 0 else "t1",
                          "detections": json.dumps(d)} for i, (p, d) in enumerate(IMAGES)])


def test_layout_key_by_hand():
    assert layout_key(json.dumps([RED, BLUE])) == (("circle", "red", 1, 1), ("square", "blue", 5, 5))
    assert layout_key([BLUE, RED]) == layout_key([RED, BLUE])
    assert layout_key([det("triangle", "green", [24.0, 24.0, 36.0, 36.0])]) == (("triangle", "green", 7, 7),)
    assert layout_key([RED, RED]) == (("circle", "red", 1, 1), ("circle", "red", 1, 1))  # a multiset
    assert layout_key([]) == ()


def test_layouts_counted_per_prompt_by_hand():
    t = layout_diversity(records())
    assert list(t["prompt_index"]) == [0, 1] and list(t["tag"]) == ["t0", "t1"]
    assert list(t["n_images"]) == [4, 4]
    assert list(t["n_layouts"]) == [2, 4]
    assert t["layout_distinct_fraction"].tolist() == pytest.approx([1 / 3, 1.0])


def test_bad_detections_name_the_record():
    df = records()
    df.loc[2, "detections"] = "[{not json"
    with pytest.raises(AnalysisError, match=r"record 2 \(prompt_index=0, sample_index=2\).*detections"):
        layout_diversity(df)
    df.loc[2, "detections"] = json.dumps([{"label": "circle", "box": [1, 2]}])
    with pytest.raises(AnalysisError, match="box"):
        layout_diversity(df)


def test_distinct_images_by_pixel_hash(tmp_path):
    from PIL import Image

    a = np.zeros((8, 8, 3), dtype=np.uint8)
    b = a.copy()
    b[3, 4] = (255, 0, 0)
    for name, img in (("a.png", a), ("a_again.png", a), ("b.png", b)):
        Image.fromarray(img).save(tmp_path / name)
    df = pd.DataFrame({"prompt_index": [0, 0, 0, 1, 1], "tag": ["x"] * 5,
                       "image": ["a.png", "a_again.png", "b.png", "a.png", None]})
    t = pixel_diversity(df, tmp_path)
    assert list(t["n_images_found"]) == [3, 1] and list(t["n_distinct_images"]) == [2, 1]
    assert t["image_distinct_fraction"].iloc[0] == pytest.approx(0.5) and np.isnan(t["image_distinct_fraction"].iloc[1])
    df.loc[1, "image"] = "missing.png"
    with pytest.raises(AnalysisError, match="missing.png"):
        pixel_diversity(df, tmp_path)


def test_feature_distances_by_hand():
    df = pd.DataFrame({"prompt_index": [0, 0, 0, 1, 1], "tag": ["x"] * 5})
    f = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [1.0, 1.0], [np.nan, 0.0]])
    t = feature_diversity(df, f)
    assert t["mean_pairwise_distance"].iloc[0] == pytest.approx((1 + 0 + 1) / 3)  # cosine: orthogonal = 1
    assert t["n_images"].tolist() == [3, 1] and t["n_features_null"].tolist() == [0, 1]
    assert np.isnan(t["mean_pairwise_distance"].iloc[1])
    e = feature_diversity(df, f, metric="euclidean")
    assert e["mean_pairwise_distance"].iloc[0] == pytest.approx((np.sqrt(2) + 1 + np.sqrt(5)) / 3)
    with pytest.raises(AnalysisError, match="aligned"):
        feature_diversity(df, f[:4])


def test_prompt_table_and_summary_per_tag():
    per, notes = prompt_diversity(records(), features=np.eye(8))
    assert "no image files: pixel-hash diversity skipped" in notes
    assert list(per["n_layouts"]) == [2, 4] and per["mean_pairwise_distance"].tolist() == pytest.approx([1.0, 1.0])
    s = summarize_diversity(per, n_resamples=100)
    lay = s[s["metric"] == "n_layouts"].set_index("group")
    assert lay.loc["all", "mean"] == pytest.approx(3.0) and lay.loc["all", "n_prompts"] == 2
    assert lay.loc["t0", "mean"] == 2 and lay.loc["t1", "mean"] == 4
    assert lay.loc["all", "ci_low"] == pytest.approx(2.0) and lay.loc["all", "ci_high"] == pytest.approx(4.0)
    _, notes = prompt_diversity(records(), layouts=False)
    assert any("layout diversity skipped" in n for n in notes)
