"""One self-contained HTML report: comparison table with CIs, deltas and verdicts, plots, image gallery.

``write_html_report`` writes a single ``report.html`` that needs nothing else: the CSS is inline, the plots
are base64 PNG data URIs and so are the generated images (a shapes image is 32x32 and is drawn 3x larger
with ``image-rendering: pixelated``, so its pixels stay sharp; images wider than ``max_image_px`` are
downscaled before embedding to keep the file small). No script, font or stylesheet is fetched from
anywhere. All text from runs (labels, prompts, plans, paths) is escaped with ``html.escape``; the
fragments of ``extra_sections`` are the caller's own HTML and are inserted as given.

The gallery shows the SAME prompts side by side across the runs of each suite/split: the same
``prompt_index`` (whose prompt text must match in every run) and the same ``sample_index`` (the smallest
one every run has). Prompts are picked deterministically from ``seed``, stratified by tag (round robin
over tags, a seeded shuffle within each), then listed by tag and index. Each image is captioned with its
correctness (✓/✗, or the score for continuous protocols) and its self-certainty (image and text parts).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from irisbench.evaluation.eval_run import RECORDS
from irisbench.report.loading import LoadedRun, RunRef, ensure_loaded, prompt_sort_key
from irisbench.report.tables import (
    IMPROVES,
    NO_DIFFERENCE,
    WORSE,
    base_words,
    comparison_table,
    group_blocks,
    incomplete_warnings,
    verdicts,
)

TABLE_BG = "#e3f2fd"  # distinctive backgrounds: the screenshot test finds these colours
GALLERY_BG = "#fff3e0"

CSS = f"""
body {{ font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px;
       color: #222; background: #ffffff; font-size: 14px; }}
h1 {{ font-size: 22px; margin: 0 0 8px 0; }} h2 {{ font-size: 18px; margin: 18px 0 8px 0; }}
h3 {{ font-size: 15px; margin: 12px 0 6px 0; }}
.warning {{ background: #b71c1c; color: #fff; padding: 8px 12px; font-weight: bold; margin: 6px 0; }}
section.tables {{ background: {TABLE_BG}; padding: 10px 14px; overflow-x: auto; }}
section.gallery {{ background: {GALLERY_BG}; padding: 10px 14px; overflow-x: auto; }}
div.plots {{ display: flex; flex-wrap: wrap; align-items: flex-start; gap: 8px; }}
section.plots, section.extra, section.runs {{ padding: 4px 0; }}
table.cmp {{ border-collapse: collapse; background: #fff; margin: 4px 0 10px 0; }}
table.cmp th, table.cmp td {{ border: 1px solid #90a4ae; padding: 3px 7px; text-align: right;
       font-variant-numeric: tabular-nums; white-space: nowrap; }}
table.cmp th:first-child, table.cmp td:first-child {{ text-align: left; }}
table.cmp th {{ background: #cfd8dc; }}
tr.incomplete td {{ background: #ffcdd2; font-weight: bold; }}
td.improves {{ color: #1b5e20; font-weight: bold; }} td.worse {{ color: #b71c1c; font-weight: bold; }}
td.nodiff {{ color: #616161; }}
ul.verdicts li.improves {{ color: #1b5e20; }} ul.verdicts li.worse {{ color: #b71c1c; }}
ul.verdicts li.nodiff, ul.verdicts li.unknown {{ color: #424242; }}
img.plot {{ max-width: 100%; border: 1px solid #ddd; margin: 4px 8px 4px 0; }}
table.gallery {{ border-collapse: collapse; }}
table.gallery th, table.gallery td {{ padding: 4px 6px; vertical-align: top; text-align: center; }}
table.gallery td.prompt {{ text-align: left; max-width: 260px; font-size: 12px; }}
table.gallery .tag {{ color: #6d4c41; font-size: 11px; }}
figure {{ margin: 0; }} figcaption {{ font-size: 11px; line-height: 1.25; }}
img.sample {{ image-rendering: pixelated; image-rendering: crisp-edges; border: 1px solid #8d6e63;
       background: #fff; }}
.ok {{ color: #1b5e20; font-weight: bold; }} .bad {{ color: #b71c1c; font-weight: bold; }}
.noimg {{ display: inline-block; width: 96px; height: 96px; line-height: 96px; background: #eee; color: #777;
       font-size: 11px; }}
table.runs td, table.runs th {{ padding: 2px 8px; text-align: left; font-size: 12px; }}
"""

_CLASS = {IMPROVES: "improves", WORSE: "worse", NO_DIFFERENCE: "nodiff"}
_e = html.escape


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_data_uri(path: Path, max_image_px: int = 256) -> tuple[str, int, int]:
    """(data URI, width, height) of an image file; PNGs at most ``max_image_px`` wide are embedded as is."""
    from PIL import Image

    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
        fmt = (im.format or "PNG").upper()
        if max(w, h) <= max_image_px and fmt in ("PNG", "JPEG", "GIF", "WEBP"):
            return data_uri(data, f"image/{fmt.lower()}"), w, h
        im = im.convert("RGB")
        im.thumbnail((max_image_px, max_image_px))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return data_uri(buf.getvalue()), im.size[0], im.size[1]


# --------------------------------------------------------------------------------------------------
# gallery
# --------------------------------------------------------------------------------------------------

def select_gallery(runs: Sequence[LoadedRun], n_prompts: int = 24, seed: int = 0) -> list[dict[str, Any]]:
    """Prompts for the gallery of runs of ONE suite/split: ``[{"prompt_index", "sample_index", "tag",
    "prompt"}]``, present in every run (same prompt text), stratified by tag, deterministic in ``seed``."""
    with_records = [r for r in runs if r.records is not None]
    if not with_records or n_prompts <= 0:
        return []
    per_run = []
    for r in with_records:
        d: dict[Any, dict[str, Any]] = {}
        for rec in r.records or []:
            e = d.setdefault(rec["prompt_index"], {"tag": rec["tag"], "prompt": rec.get("prompt"), "samples": set()})
            e["samples"].add(rec["sample_index"])
        per_run.append(d)
    first = per_run[0]
    candidates = []
    for p in sorted(first, key=prompt_sort_key):
        if not all(p in d and d[p]["prompt"] == first[p]["prompt"] for d in per_run):
            continue
        samples = set.intersection(*(d[p]["samples"] for d in per_run))
        if samples:
            candidates.append({"prompt_index": p, "sample_index": min(samples, key=prompt_sort_key),
                               "tag": first[p]["tag"], "prompt": first[p]["prompt"]})
    tags = list(dict.fromkeys(c["tag"] for c in candidates))
    rng = np.random.default_rng(seed)
    pools = {t: [candidates[i] for i in rng.permutation(len(candidates)) if candidates[i]["tag"] == t] for t in tags}
    picked: list[dict[str, Any]] = []
    while len(picked) < n_prompts and any(pools.values()):
        for t in tags:
            if pools[t] and len(picked) < n_prompts:
                picked.append(pools[t].pop(0))
    return sorted(picked, key=lambda c: (tags.index(c["tag"]), prompt_sort_key(c["prompt_index"])))


def _fmt(x: Any) -> str | None:
    return None if x is None or (isinstance(x, float) and x != x) else f"{float(x):.3f}"


def _caption(rec: dict[str, Any], value_field: str) -> str:
    if value_field == "correct":
        ok = bool(rec.get("correct"))
        parts = [f'<span class="{"ok" if ok else "bad"}">{"✓" if ok else "✗"}</span>']
    else:
        parts = [f"score {_e(_fmt(rec.get(value_field)) or '?')}"]
    for key, short in (("sc_image", "sc img"), ("sc_text", "sc txt")):
        v = _fmt(rec.get(key))
        if v is not None:
            parts.append(f"{short} {_e(v)}")
    return "<br>".join(parts)


def _image_cell(run: LoadedRun, rec: dict[str, Any] | None, max_image_px: int) -> str:
    if rec is None:
        return '<span class="noimg">no record</span>'
    rel = rec.get("image")
    alt = _e(f"{run.label}: prompt {rec['prompt_index']} sample {rec['sample_index']}")
    if not rel:
        img = '<span class="noimg">no image saved</span>'
    elif not (run.path / rel).is_file():
        img = f'<span class="noimg">missing: {_e(str(rel))}</span>'
    else:
        uri, w, h = image_data_uri(run.path / rel, max_image_px)
        scale = 3.0 if max(w, h) <= 64 else 1.0
        scale = min(scale, 192 / max(w, h))
        dw, dh = round(w * scale), round(h * scale)
        img = f'<img class="sample" src="{uri}" width="{dw}" height="{dh}" alt="{alt}" title="{alt}">'
    return f"<figure>{img}<figcaption>{_caption(rec, run.value_field)}</figcaption></figure>"


def gallery_html(runs: Sequence[LoadedRun], n_prompts: int = 24, seed: int = 0, max_image_px: int = 256) -> str:
    """The gallery table of one suite/split (rows: prompts, columns: runs)."""
    shown = [r for r in runs if r.records is not None]
    picks = select_gallery(shown, n_prompts, seed)
    if not picks:
        return "<p>No prompt is present in every run's records: no gallery.</p>"
    index = [{(rec["prompt_index"], rec["sample_index"]): rec for rec in r.records or []} for r in shown]
    head = "".join(f"<th>{_e(r.label)}</th>" for r in shown)
    rows = []
    for c in picks:
        key = (c["prompt_index"], c["sample_index"])
        cells = "".join(f"<td>{_image_cell(r, idx.get(key), max_image_px)}</td>"
                        for r, idx in zip(shown, index, strict=True))
        prompt = (f'{_e(str(c["prompt"]))}<br><span class="tag">{_e(c["tag"])} · prompt {_e(str(c["prompt_index"]))}'
                  f' · sample {_e(str(c["sample_index"]))}</span>')
        rows.append(f'<tr><td class="prompt">{prompt}</td>{cells}</tr>')
    skipped = [r.label for r in runs if r.records is None]
    note = f"<p>Not shown (no {RECORDS}): {_e(', '.join(skipped))}</p>" if skipped else ""
    return f'{note}<table class="gallery"><tr><th>prompt</th>{head}</tr>{"".join(rows)}</table>'


# --------------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------------

def _num_cell(text: str) -> str:
    """``0.612 [0.590, 0.634]`` as the estimate over its interval (two short lines keep tables narrow)."""
    value, sep, ci = str(text).partition(" [")
    return f"{_e(value)}<br><small>[{_e(ci)}</small>" if sep else _e(value)


def tables_html(tidy: pd.DataFrame) -> str:
    """Scores and deltas per suite/split as HTML tables, then the verdicts."""
    base = tidy.attrs.get("base")
    conf = f"{round(tidy.attrs.get('confidence', 0.95) * 100):g}%"
    vs = verdicts(tidy)
    out = []
    for b in group_blocks(tidy):
        head = "".join(f"<th>{_e(h)}</th>" for h in ["run", "images", *b["metrics"]])
        body = "".join(
            f'<tr class="{"" if s["complete"] else "incomplete"}">'
            + "".join(f"<td>{_e(c)}</td>" for c in [s["label"], s["images"]])
            + "".join(f"<td>{_num_cell(c)}</td>" for c in s["cells"]) + "</tr>"
            for s in b["scores"])
        out.append(f"<h3>{_e(b['group'])}: scores with {conf} cluster-bootstrap CIs</h3>"
                   f'<table class="cmp scores"><tr>{head}</tr>{body}</table>')
        if b["deltas"]:
            dhead = "".join(f"<th>{_e(h)}</th>" for h in ["run", "pairing", *b["metrics"]])
            dbody = "".join(
                f'<tr class="{"" if d["complete"] else "incomplete"}"><td>{_e(d["label"])}</td><td>{_e(d["mode"])}</td>'
                + "".join(f'<td class="{_CLASS.get(k, "")}">{_num_cell(c)}</td>'
                          for c, k in zip(d["cells"], d["classes"], strict=True)) + "</tr>"
                for d in b["deltas"])
            out.append(f"<h3>{_e(b['group'])}: delta vs {_e(base_words(str(base)))} ({conf} CI)</h3>"
                       f'<table class="cmp deltas"><tr>{dhead}</tr>{dbody}</table>')
        items = "".join(f'<li class="{_CLASS.get(v["class"], "unknown")}">{_e(v["text"])}</li>'
                        for v in vs if v["group"] == b["group"])
        if items:
            out.append(f'<ul class="verdicts">{items}</ul>')
    return "\n".join(out)


def _runs_html(runs: Sequence[LoadedRun]) -> str:
    rows = "".join(
        "<tr>" + "".join(f"<td>{_e(str(x))}</td>" for x in (
            r.label, r.policy_name, "/".join(r.group), f"{r.counts['actual']}/{r.counts['expected']}",
            (r.prompts_sha256 or "?")[:12], r.path)) + "</tr>" for r in runs)
    head = "".join(f"<th>{h}</th>" for h in ("label", "policy", "suite/split/world", "images", "prompts sha256",
                                             "folder"))
    return f'<table class="runs"><tr>{head}</tr>{rows}</table>'


def write_html_report(out_dir: str | Path, runs: Sequence[RunRef | LoadedRun], base: str | None = None, *,
                      title: str = "irisbench report", extra_sections: Sequence[tuple[str, str]] = (),
                      gallery_prompts: int = 24, seed: int = 0, table: pd.DataFrame | None = None,
                      plots: Sequence[tuple[str, bytes]] | None = None, max_image_px: int = 256,
                      n_resamples: int = 2000) -> Path:
    """Write ``<out_dir>/report.html`` and return its path.

    ``runs``/``base``: as ``comparison_table`` (pass ``table`` to reuse one already computed from the same
    runs). ``extra_sections``: ``(title, html_fragment)`` blocks appended after the gallery (fragments are
    inserted unescaped: they are the caller's HTML). ``plots``: ``(caption, png_bytes)`` to embed; default:
    the score bars and delta forest of every suite/split.
    """
    loaded = ensure_loaded(runs)
    tidy = table if table is not None else comparison_table(loaded, base, n_resamples=n_resamples, seed=seed)
    if plots is None:
        plots = [(caption, png) for _, caption, png in default_plots(tidy)]
    warnings = "".join(f'<div class="warning">{_e(w)}</div>' for w in incomplete_warnings(tidy))
    plot_html = "".join(f'<figure><img class="plot" src="{data_uri(png)}" alt="{_e(cap)}">'
                        f"<figcaption>{_e(cap)}</figcaption></figure>" for cap, png in plots)
    names = {(s.suite, s.split, s.world): s.group for s in tidy.itertuples()}
    galleries = []
    for g in dict.fromkeys(r.group for r in loaded):
        members = [r for r in loaded if r.group == g]
        galleries.append(f"<h3>{_e(names.get(g, '/'.join(g)))}</h3>"
                         + gallery_html(members, gallery_prompts, seed, max_image_px))
    extras = "".join(f'<section class="extra"><h2>{_e(t)}</h2>{frag}</section>' for t, frag in extra_sections)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
{warnings}
<section class="tables" id="tables"><h2>Comparison</h2>{tables_html(tidy)}</section>
<section class="plots" id="plots"><h2>Plots</h2><div class="plots">{plot_html or "<p>No plots.</p>"}</div></section>
<section class="gallery" id="gallery"><h2>Gallery: the same prompts across runs</h2>{"".join(galleries)}</section>
{extras}
<section class="runs" id="runs"><h2>Runs</h2>{_runs_html(loaded)}</section>
</body></html>
"""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text).strip("-") or "group"


def default_plots(tidy: pd.DataFrame) -> list[tuple[str, str, bytes]]:
    """``(file stem, caption, PNG bytes)``: score bars and (with a base) the delta forest per suite/split."""
    from irisbench.report import plots as plotting

    out = []
    for g in dict.fromkeys(tidy["group"]):
        bars = plotting.figure_png(plotting.score_bars(tidy, g))
        out.append((f"scores-{_slug(g)}", f"{g}: scores with 95% CIs", bars))
        if tidy[(tidy["group"] == g)]["delta"].notna().any():
            forest = plotting.figure_png(plotting.delta_forest(tidy, g))
            out.append((f"deltas-{_slug(g)}", f"{g}: deltas vs base", forest))
    return out
