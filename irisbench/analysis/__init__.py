"""Does a model's self-uncertainty predict image quality? Pure functions over per-image records.

Everything here is derived from what runs already wrote — an eval run's ``records.jsonl`` / ``.parquet``
(one record per image: prompt, tag, correctness or score, detections, self-certainty and entropy by
modality) and a training run's ``train/metrics.jsonl`` and ``eval/<split>/step-N/`` — with no model call:

- ``correlation``: Spearman / Pearson (point-biserial for binary quality) / Kendall between uncertainty
  and quality, overall and per tag, with prompt-cluster bootstrap intervals; within-prompt concordance;
  quality by decile;
- ``bestofn``: best-of-N selection by the model's own uncertainty vs a random pick and the oracle;
- ``diversity``: per-prompt diversity (feature distances, shapes-world layouts, distinct pixels);
- ``dynamics``: training curves beside checkpoint evaluations (the paper's Figure 2 analogue);
- ``selection``: checkpoint choice on a validation split, reported on test (no test leakage);
- ``analyze_runs``: all of the above over run folders, into tidy CSV/Parquet tables, PNG plots and a
  summary dict.

Departures from the paper (IRIS, arXiv 2509.25562), following its reviewers (docs/method.md §5): intervals
everywhere resample prompts (images of a prompt are not independent); checkpoints are chosen on val, not
test; diversity is measured beside alignment. The p-values reported with correlations are scipy's and
treat images as independent — read the intervals.
"""

from irisbench.analysis.analyze import analyze_runs
from irisbench.analysis.bestofn import best_of_n, best_of_n_table
from irisbench.analysis.correlation import binned, correlate, prompt_means, within_prompt
from irisbench.analysis.diversity import (
    feature_diversity,
    layout_diversity,
    layout_key,
    pixel_diversity,
    prompt_diversity,
    summarize_diversity,
)
from irisbench.analysis.dynamics import eval_curves, load_training_curves, training_dynamics
from irisbench.analysis.record_frames import AnalysisError, load_records
from irisbench.analysis.selection import select_checkpoint, selection_table

__all__ = [
    "AnalysisError",
    "analyze_runs",
    "best_of_n",
    "best_of_n_table",
    "binned",
    "correlate",
    "eval_curves",
    "feature_diversity",
    "layout_diversity",
    "layout_key",
    "load_records",
    "load_training_curves",
    "pixel_diversity",
    "prompt_diversity",
    "prompt_means",
    "select_checkpoint",
    "selection_table",
    "summarize_diversity",
    "training_dynamics",
    "within_prompt",
]
