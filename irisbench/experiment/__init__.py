"""``irisbench experiment``: the headline comparison (``run``) and its summary tables and README block
(``summary``). The runner's public names are importable from the package."""

from irisbench.experiment.run import (
    DEFAULT_METHODS,
    NULL_METHOD,
    REFERENCE_POLICIES,
    WORLD_BASES,
    ExperimentConfig,
    parse_seeds,
    run_experiment,
)

__all__ = ["DEFAULT_METHODS", "NULL_METHOD", "REFERENCE_POLICIES", "WORLD_BASES", "ExperimentConfig", "parse_seeds",
           "run_experiment"]
