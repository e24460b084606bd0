"""Evaluation runs: what an evaluation scores (the plan), the runner, image-folder layouts, the metrics of a
finished run and the WISE judge pipeline."""
