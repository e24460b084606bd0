"""HTML report: self-contained page, table, gallery (same prompt/sample across runs), escaping, build_report,
and a headless-Chromium screenshot checked pixel by pixel (skipped when /usr/bin/chromium is absent)."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fixtures import checker, make_run, solid

from irisbench.report import RunRef, build_report, comparison_table, verdicts, write_html_report
from irisbench.report.html import GALLERY_BG, TABLE_BG, select_gallery
from irisbench.report.loading import load_run

CHROMIUM = Path(os.environ.get("IRISBENCH_CHROMIUM", "/usr/bin/chromium"))
TAGS = {p: ["single_object", "counting", "color_attr"][p % 3] for p in range(9)}
PALETTE = [(200, 30, 30), (30, 160, 60), (40, 60, 200), (230, 200, 40)]


def _image(run_id: int):
    def draw(p: int, s: int) -> np.ndarray:  # unique per (run, prompt, sample): lets the test tell them apart
        a = solid(PALETTE[(p + s) % 4])
        a[0, 0] = (run_id, p, s)
        a[10:22, 10:22] = PALETTE[(p + s + 1) % 4]
        return a
    return draw


def _runs(tmp_path: Path, names=("base", "IRIS (nsc)", "random")) -> list[RunRef]:
    rng = np.random.default_rng(0)
    refs = []
    for i, name in enumerate(names):
        correct = {(p, s): bool(rng.random() < 0.3 + 0.3 * i) for p in range(9) for s in range(2)}
        path = make_run(tmp_path / f"run{i}", correct, TAGS, policy=name, image=_image(i),
                        sc=lambda p, s: 0.25 * p + s)
        refs.append(RunRef(name, path))
    return refs


class _Imgs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str]] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        for key in ("href", "src"):
            if key in a:
                self.links.append(a[key])


def test_html_is_self_contained_with_table_and_gallery(tmp_path: Path) -> None:
    refs = _runs(tmp_path)
    df = comparison_table(refs, base="base", n_resamples=200)
    path = write_html_report(tmp_path / "out", refs, "base", title="Shapes <test> & co", gallery_prompts=4,
                             n_resamples=200, extra_sections=[("Analysis", "<p id='extra'>sc vs accuracy</p>")])
    text = path.read_text(encoding="utf-8")
    assert path.name == "report.html" and "<title>Shapes &lt;test&gt; &amp; co</title>" in text
    parser = _Imgs()
    parser.feed(text)
    assert all(link.startswith("data:image/png;base64,") for link in parser.links), "only data URIs"
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", text) and "@import" not in text
    assert "<script" not in text.lower()
    # the comparison table: every score and delta of the table, with its CI
    for row in df.itertuples():
        value, ci = row.cell.split(" [")
        assert f"{value}<br><small>[{ci}</small>" in text
    vs = verdicts(df)
    assert len(vs) == 2 and all(html.escape(v["text"]) in text for v in vs)
    assert "<p id='extra'>sc vs accuracy</p>" in text
    # the gallery: one <img> per (prompt, run), the same (prompt, sample) image file in every run
    samples = [a for a in parser.imgs if a.get("class") == "sample"]
    assert len(samples) == 4 * 3
    picks = select_gallery([load_run(r) for r in refs], 4, seed=0)
    assert len({c["tag"] for c in picks}) == 3  # stratified: every tag is shown
    for k, c in enumerate(picks):
        row = samples[3 * k: 3 * k + 3]
        for ref, img in zip(refs, row, strict=True):
            file = Path(ref.path) / f"images/{c['prompt_index']:05d}/{c['sample_index']:02d}.png"
            assert base64.b64decode(img["src"].split(",", 1)[1]) == file.read_bytes()
            assert img["width"] == "96" and img["height"] == "96"
            assert img["alt"] == f"{ref.label}: prompt {c['prompt_index']} sample {c['sample_index']}"
    # captions: correctness mark and self-certainty of each image
    rec = next(r for r in load_run(refs[0]).records or [] if (r["prompt_index"], r["sample_index"]) == (
        picks[0]["prompt_index"], picks[0]["sample_index"]))
    mark = "✓" if rec["correct"] else "✗"
    assert f">{mark}</span><br>sc img {rec['sc_image']:.3f}<br>sc txt {rec['sc_text']:.3f}" in text
    assert "image-rendering: pixelated" in text


def test_text_is_escaped(tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    path = make_run(tmp_path / "a", {(p, 0): p % 2 == 0 for p in range(9)}, TAGS, image=_image(0),
                    prompts=[f"a photo of {evil} {p}" for p in range(9)])
    out = write_html_report(tmp_path / "out", [RunRef(f"run {evil}", path)], None, title=evil, n_resamples=50)
    text = out.read_text(encoding="utf-8")
    assert evil not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_gallery_selection_is_deterministic_stratified_and_common(tmp_path: Path) -> None:
    tags = {p: ["single_object", "counting", "color_attr"][p % 3] for p in range(30)}
    a = make_run(tmp_path / "a", {(p, s): True for p in range(30) for s in range(3)}, tags)
    b = make_run(tmp_path / "b", {(p, s): True for p in range(30) for s in range(1, 3) if p != 4}, tags)
    runs = [load_run(RunRef("a", a)), load_run(RunRef("b", b))]
    picks = select_gallery(runs, 6, seed=0)
    assert picks == select_gallery(runs, 6, seed=0)
    assert [c["tag"] for c in picks] == ["single_object"] * 2 + ["counting"] * 2 + ["color_attr"] * 2
    assert all(c["prompt_index"] != 4 and c["sample_index"] == 1 for c in picks)  # common prompts and samples
    others = {tuple(c["prompt_index"] for c in select_gallery(runs, 6, seed=s)) for s in range(1, 6)}
    assert len(others) > 1
    assert len(select_gallery(runs, 100, seed=0)) == 29


def test_build_report_writes_every_file(tmp_path: Path) -> None:
    refs = _runs(tmp_path)
    out = build_report(refs, tmp_path / "rep", base="base", title="t", gallery_prompts=3, n_resamples=200)
    for key in ("markdown", "csv", "latex", "html"):
        assert out[key].is_file() and out[key].parent == tmp_path / "rep"
    assert [p.name for p in out["plots"]] == ["scores-geneval-test.png", "deltas-geneval-test.png"]
    from PIL import Image

    for p in out["plots"]:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 300
    assert len(out["verdicts"]) == 2 and all(v in out["markdown"].read_text() for v in out["verdicts"])
    results = json.loads((Path(refs[1].path) / "results.json").read_text())
    csv = pd.read_csv(out["csv"])
    row = csv[(csv["label"] == "IRIS (nsc)") & (csv["metric"] == "overall")].iloc[0]
    assert row["score"] == pytest.approx(results["scores"]["overall"]["score"], abs=1e-6)
    page = out["html"].read_text()
    assert page.count('class="sample"') == 3 * 3
    plots = re.findall(r'<img class="plot" src="data:image/png;base64,([^"]+)"', page)
    assert [base64.b64decode(p) for p in plots] == [p.read_bytes() for p in out["plots"]]


# --------------------------------------------------------------------------------------------------
# headless Chromium
# --------------------------------------------------------------------------------------------------

def _hex(c: str) -> tuple[int, int, int]:
    return tuple(int(c[i: i + 2], 16) for i in (1, 3, 5))


def _mask(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 2) -> np.ndarray:
    return np.all(np.abs(img.astype(int) - np.array(rgb)) <= tol, axis=-1)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install -y chromium)")
def test_chromium_renders_table_and_pixelated_gallery(tmp_path: Path) -> None:
    magenta, red, blue = (255, 0, 255), (255, 0, 0), (0, 0, 255)
    tags = {p: ["single_object", "counting"][p % 2] for p in range(6)}
    base = make_run(tmp_path / "base", {(p, 0): p % 2 == 0 for p in range(6)}, tags, image=lambda p, s: solid(magenta))
    other = make_run(tmp_path / "other", {(p, 0): p < 4 for p in range(6)}, tags,
                     image=lambda p, s: checker(red, blue))
    page = write_html_report(tmp_path / "out", [RunRef("base", base), RunRef("checker", other)], "base",
                             title="screenshot test", gallery_prompts=2, n_resamples=200)
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--hide-scrollbars", "--force-device-scale-factor=1",
           "--force-color-profile=srgb", "--window-size=1280,2000", f"--screenshot={shot}", page.as_uri()]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    keep = os.environ.get("IRISBENCH_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape == (2000, 1280, 3)
    # the comparison table: its section background is drawn, with text (dark pixels) inside it
    table = _mask(img, _hex(TABLE_BG))
    assert table.sum() > 100_000
    t0, t1, l0, l1 = _bbox(table)
    assert (img[t0:t1, l0:l1].max(axis=-1) < 90).sum() > 2000, "no text drawn in the table section"
    # the gallery: its section background, below the table
    gallery = _mask(img, _hex(GALLERY_BG))
    assert gallery.sum() > 50_000
    g0, g1, k0, k1 = _bbox(gallery)
    assert g0 > t1
    # the magenta marker images (32x32 drawn at 96x96) are inside the gallery, whole
    mag = _mask(img, magenta)
    assert mag.sum() == 2 * 96 * 96, mag.sum()
    m0, m1, n0, n1 = _bbox(mag)
    assert g0 < m0 and m1 < g1 and k0 <= n0 and n1 <= k1
    # the 1-pixel checkerboard stays sharp (pixelated): pure red and pure blue, no blended purple
    region = img[g0:g1, k0:k1]
    n_red, n_blue = _mask(region, red).sum(), _mask(region, blue).sum()
    assert n_red == n_blue == 2 * 96 * 96 // 2
    r, g, b = (region[..., i].astype(int) for i in range(3))
    purple = (r > 60) & (r < 200) & (b > 60) & (b < 200) & (g < 40)
    assert purple.sum() < 50, "the upscaled images were smoothed: image-rendering: pixelated is not applied"


def test_report_from_real_oracle_and_random_evals(tmp_path: Path) -> None:
    from PIL import Image

    from irisbench.evaluation.evaluate import EvalOptions, evaluate

    refs = []
    for name in ("random", "oracle"):
        evaluate(EvalOptions(policy=name, limit=4, images_per_prompt=1, n_resamples=100), tmp_path / name,
                 progress=False)
        refs.append(RunRef(name, tmp_path / name))
    out = build_report(refs, tmp_path / "rep", base="random", gallery_prompts=4, n_resamples=200)
    parser = _Imgs()
    parser.feed(out["html"].read_text(encoding="utf-8"))
    samples = [a for a in parser.imgs if a.get("class") == "sample"]
    assert len(samples) == 8
    for img in samples:
        with Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1]))) as im:
            assert im.size == (32, 32)
    assert "oracle " in out["verdicts"][0]


def test_continuous_score_captions(tmp_path: Path) -> None:
    keys = [(p, 0) for p in range(6)]
    path = make_run(tmp_path / "cb", dict.fromkeys(keys, False), {p: "color" for p in range(6)}, suite="compbench",
                    scores={k: 0.125 * k[0] for k in keys}, image=_image(0))
    text = write_html_report(tmp_path / "out", [RunRef("cb", path)], None, n_resamples=50).read_text()
    assert "score 0.625" in text and "✗" not in text and "✓" not in text
