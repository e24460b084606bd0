"""Reports comparing eval runs: tables with CIs and deltas vs a base run, plots, and one HTML page.

``build_report(runs, out_dir, base=...)`` writes ``report.md``, ``report.csv`` (tidy, full precision),
``report.tex`` (booktabs), ``report.html`` (self-contained: inline CSS, base64 images, gallery) and the plot
PNGs, and returns their paths. The pieces are usable on their own: ``tables`` (``comparison_table``,
renderers, ``verdict``), ``plots`` (score bars, delta forest, training curves), ``html``
(``write_html_report``). The report measures and never confirms: a run whose delta CI includes 0 "does not
improve on the base", in those words. matplotlib and PIL are imported only when plots/images are drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from irisbench.report.loading import LoadedRun, ReportError, RunRef, ensure_loaded, load_run, load_runs
from irisbench.report.tables import (
    comparison_table,
    render_csv,
    render_latex,
    render_markdown,
    render_rich,
    verdict,
    verdicts,
    wide_table,
)

__all__ = ["LoadedRun", "ReportError", "RunRef", "build_report", "comparison_table", "load_run", "load_runs",
           "render_csv", "render_latex", "render_markdown", "render_rich", "verdict", "verdicts", "wide_table",
           "write_html_report"]


def write_html_report(*args: Any, **kwargs: Any) -> Path:
    """See ``irisbench.report.html.write_html_report``."""
    from irisbench.report.html import write_html_report as _write

    return _write(*args, **kwargs)


def build_report(runs: Sequence[RunRef | LoadedRun], out_dir: str | Path, base: str | None = None, *,
                 title: str = "irisbench report", extra_sections: Sequence[tuple[str, str]] = (),
                 gallery_prompts: int = 24, seed: int = 0, n_resamples: int = 2000) -> dict[str, Any]:
    """Write every report file into ``out_dir``; returns ``{"markdown", "csv", "latex", "html": Path,
    "plots": [Path, ...], "table": tidy DataFrame, "verdicts": [str, ...]}``."""
    from irisbench.report.html import default_plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = ensure_loaded(runs)
    tidy = comparison_table(loaded, base, n_resamples=n_resamples, seed=seed)
    paths: dict[str, Any] = {}
    for key, name, text in (("markdown", "report.md", render_markdown(tidy, title)),
                            ("csv", "report.csv", render_csv(tidy)),
                            ("latex", "report.tex", render_latex(tidy, title))):
        (out / name).write_text(text, encoding="utf-8")
        paths[key] = out / name
    pngs = default_plots(tidy)
    paths["plots"] = []
    for stem, _, png in pngs:
        (out / f"{stem}.png").write_bytes(png)
        paths["plots"].append(out / f"{stem}.png")
    paths["html"] = write_html_report(out, loaded, base, title=title, extra_sections=extra_sections,
                                      gallery_prompts=gallery_prompts, seed=seed, table=tidy,
                                      plots=[(caption, png) for _, caption, png in pngs])
    paths["table"] = tidy
    paths["verdicts"] = [v["text"] for v in verdicts(tidy)]
    return paths
