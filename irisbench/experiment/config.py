"""What an ``irisbench experiment`` runs: the methods of each world, the null control, the splits and the
``ExperimentConfig`` (strict, checked in one line before anything is written), and how many processes share
the work (``jobs``: training seeds and evaluations run side by side, one torch thread each by default, so a
2-core machine runs two at once; the numbers do not depend on ``jobs``).

Departures from the paper are the presets' (``irisbench/configs/*.yaml``, docs/method.md); this module only
chooses which presets the experiment trains and how it evaluates them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from irisbench.core.errors import UsageError
from irisbench.train.pretrain import ARCHS

REFERENCE_POLICIES = ("oracle", "random")
VAL, TEST = "val", "test"
# the RL-training texts' split (irisbench.world.prompts.seen_split): each seed's best-val checkpoint and the base are
# also scored there, so a gain can be read on seen and on unseen (test) prompts
SEEN, SEEN_SUITE = "seen", "geneval"
# what changes with --world (irisbench.world.textures): the base, the default methods, where it is published
WORLD_BASES = {"shapes": "shapes-base", "textures": "textures-base"}
NULL_METHOD = "null-random"  # the null control every method's effect is stated against (summary: vs the null)
# labels pandas.read_csv reads as missing (its default na_values): a method so named would vanish from the tidy tables
NA_LABELS = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                       "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
DEFAULT_METHODS = {
    # the main job (README's first command, <= 30 min on a quiet 2-core CPU): three training seeds of IRIS as coded,
    # the external verifier and the null control (iris-shapes with a random reward), GenEval only; IRIS as released
    # and the CompBench-style suite run with --extended (EXTENDED_METHODS, EXTENDED_SUITES); the shuffled-nsc null,
    # sc and entropy (which collapsed in every earlier run) via --method
    "shapes": {"iris-nsc": "iris-shapes", "verifier": "verifier-shapes", NULL_METHOD: "null-shapes"},
    # the textures world asks whether IRIS still collapses once image tokens are genuinely uncertain
    "textures": {"iris-nsc": "iris-shapes", "nsc-balanced": "nsc-balanced-shapes",
                 "iris-faithful": "iris-shapes-faithful", "verifier": "verifier-shapes", NULL_METHOD: "null-shapes"},
}
# what --extended adds to the shapes world's main job (published in results/experiment-extended): IRIS as released
# (beta, frozen image head), inserted after iris-nsc, and the CompBench-style suite (GenEval's own items under
# T2I-CompBench's rules: a second set of scoring rules, not a second benchmark)
EXTENDED_METHODS = {"shapes": {"iris-faithful": "iris-shapes-faithful"}}
# the model the methods train (ARCHS, pretrain's): "shapes-lm" (the shipped bases above) or "janus" (the shipped
# tiny transformers Janus, janus-shapes, trained through JanusPolicy as Janus-Pro is: CoT plan then CFG image
# tokens, the image rows frozen); the Janus path has the shapes world only and publishes beside the shapes LM's
# main job (README block and results/experiment-janus)
JANUS_BASE = "janus-shapes"
JANUS_METHODS = {"iris-nsc": "janus-shapes-iris", "verifier": "janus-shapes-verifier", NULL_METHOD: "janus-shapes-null"}
MAIN_SUITES, EXTENDED_SUITES = ("geneval",), ("geneval", "compbench")


def default_methods(world: str, extended: bool) -> dict[str, str]:
    """The methods ``irisbench experiment`` trains without ``--method`` (``extended``: with ``--extended``)."""
    methods = dict(DEFAULT_METHODS[world])
    extra = EXTENDED_METHODS.get(world, {}) if extended else {}
    if not extra:
        return methods
    first, *rest = methods.items()
    return dict([first, *extra.items(), *rest])


@dataclass
class ExperimentConfig:
    methods: dict[str, str] | None = None  # label -> preset (None: DEFAULT_METHODS of the world)
    steps: int = 40
    checkpoint_every: int = 20
    suites: tuple[str, ...] | None = None  # None: GenEval in the shapes main job, both suites extended or textures
    splits: tuple[str, ...] = ("val", "test")
    val_images_per_prompt: int = 2  # in-training val evaluations (checkpoint selection)
    seed: int = 0  # evaluation seed: the base and every checkpoint draw the same sampling seeds (paired deltas)
    seeds: tuple[int, ...] = (0, 1, 2)  # training seeds: each method trains once per seed
    train_overrides: dict[str, Any] = field(default_factory=dict)  # applied to every method
    references: tuple[str, ...] = REFERENCE_POLICIES
    base: str | None = None  # a policy name or checkpoint folder (None: the world's shipped base)
    world: str = "shapes"  # "shapes" or "textures" (irisbench.world.textures)
    arch: str = "shapes-lm"  # the model trained (ARCHS): "janus" sets the base and methods of the Janus path
    eval_limit: int | None = None  # smoke runs only: the first N prompts of each split
    threads: int | None = None  # torch threads (None: torch's default); 1 is faster on a busy machine
    eval_images_per_prompt: int | None = 2  # 2 per prompt keeps each checkpoint's evaluation cheap on CPU
    # the base is evaluated once and shared by every method and seed: more images per prompt make its own sampling
    # error (carried into the across-seed intervals, irisbench.report.seeds) small; the references keep 2
    base_images_per_prompt: int | None = 8
    seen: bool = True  # also score the base and each best-val checkpoint on GenEval's seen split (RL-training texts)
    device: str | None = None  # every evaluation and training run (irisbench.core.devices; None: cuda when available)
    extended: bool = False  # the shapes world's extended run: EXTENDED_METHODS and EXTENDED_SUITES
    # processes that share the training runs and evaluations (None: one per usable core on a CPU, one on a GPU);
    # with more than one, each uses ``threads`` torch threads (None: the usable cores / jobs)
    jobs: int | None = None

    def suites_to_run(self) -> tuple[str, ...]:
        """``suites``, or where unset: GenEval in the shapes world's main job, both suites extended or textures."""
        if self.suites is not None:
            return self.suites
        return MAIN_SUITES if self.world == "shapes" and not self.extended else EXTENDED_SUITES

    @property
    def name(self) -> str:
        """What names the experiment's README block and published folder: the world, or "janus" for the Janus
        path (irisbench.experiment.summary.readme_markers, published_folder)."""
        return "janus" if self.arch == "janus" else self.world

    def check(self) -> None:
        """One-line ``UsageError`` for a config the experiment cannot run; fills the world's defaults."""
        from irisbench.world.textures import check_world

        check_world(self.world, "--world")
        if self.arch not in ARCHS:
            raise UsageError(f"--arch {self.arch!r}: choose one of {', '.join(ARCHS)}")
        if self.arch == "janus" and (self.world != "shapes" or self.extended):
            raise UsageError("--arch janus runs the shapes world's main job through the Janus path: leave "
                             f"{'--extended' if self.extended else f'--world {self.world}'} out")
        if self.arch == "janus":
            self.base = self.base or JANUS_BASE
            self.methods = dict(JANUS_METHODS) if self.methods is None else self.methods
        self.base = self.base or WORLD_BASES[self.world]
        self.methods = default_methods(self.world, self.extended) if self.methods is None else self.methods
        self.suites = self.suites_to_run()
        if not self.methods:
            raise UsageError("the experiment needs at least one method")
        for label in self.methods:
            if label.strip() in NA_LABELS:
                raise UsageError(f"method label {label!r} reads as a missing value in the tidy tables (pandas' CSV "
                                 f"reader): give it another name, e.g. --method {label.strip() or 'x'}-run=PRESET")
        self.seeds = check_seeds(self.seeds)
        from irisbench.train.config import load_preset

        for preset in self.methods.values():  # an unknown or broken preset fails here, before the base is evaluated
            load_preset(preset)
        if TEST not in self.splits:
            raise UsageError(f"splits {self.splits} must include {TEST!r}: checkpoints are reported on test")
        for name in ("eval_images_per_prompt", "base_images_per_prompt", "val_images_per_prompt"):
            n = getattr(self, name)
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                flag = " (--base-images)" if name == "base_images_per_prompt" else ""
                raise UsageError(f"{name}{flag} must be a positive integer, got {n!r}")
        if "seed" in self.train_overrides:
            raise UsageError("train_overrides must not set 'seed': the training seeds are ExperimentConfig.seeds")
        for name in ("jobs", "threads"):
            n = getattr(self, name)
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise UsageError(f"{name} (--{name}) must be a positive integer, got {n!r}")

    def resolve_jobs(self) -> None:
        """Fill ``jobs`` (None: the usable cores on a CPU, 1 on a GPU, where one process keeps the device busy)
        and, with more than one job, ``threads`` (None: the usable cores shared out, at least 1 each). Called
        once the device is resolved; every process then trains and evaluates with the same thread count."""
        cores = usable_cores()
        if self.jobs is None:
            self.jobs = 1 if str(self.device or "cpu").startswith("cuda") else cores
        if self.jobs > 1 and self.threads is None:
            self.threads = max(1, cores // self.jobs)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def null_methods(methods: dict[str, str], overrides: dict[str, Any] | None = None) -> list[str]:
    """The labels of ``methods`` whose preset (with ``overrides``, the experiment's ``train_overrides``) is a
    null control: every reward term in ``NULL_REWARDS``."""
    from irisbench.train.config import TrainConfig, load_preset
    from irisbench.train.rewards import NULL_REWARDS

    out = []
    for label, preset in methods.items():
        reward = {"reward": TrainConfig.reward, **load_preset(preset), **(overrides or {})}["reward"]
        names = [reward] if isinstance(reward, str) else list(reward)
        if all(n in NULL_REWARDS for n in names):
            out.append(label)
    return out


def check_seeds(seeds: Any) -> tuple[int, ...]:
    """The training seeds as a tuple: non-empty, distinct, non-negative integers."""
    if not isinstance(seeds, (list, tuple)):
        raise UsageError(f"seeds must be a tuple of integers, got {seeds!r}")
    values = tuple(seeds)
    if not values:
        raise UsageError("seeds: give at least one training seed")
    for s in values:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise UsageError(f"seeds: {s!r} is not a non-negative integer (seeds {list(values)})")
    if len(set(values)) != len(values):
        raise UsageError(f"seeds: {list(values)} has duplicates")
    return values


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)`` (the ``--seeds`` option); a one-line ``UsageError`` otherwise."""
    items = [x.strip() for x in str(text).split(",")]
    bad = next((x for x in items if not (x.isascii() and x.isdigit())), None)
    if bad is not None:
        what = "an empty item" if not bad else f"{bad!r} is not a non-negative integer"
        raise UsageError(f"--seeds {text!r}: {what} (give a comma list such as 0,1,2)")
    try:
        return check_seeds(tuple(int(x) for x in items))
    except UsageError as e:
        raise UsageError(f"--seeds {text!r}: {str(e).removeprefix('seeds: ')}") from None


