"""Command-line options, each defined once: dataclass fields whose metadata holds the flag, its help and where
it does not apply, and the ``command`` decorator that builds a Typer command from such a dataclass.

trl builds its parser from its configs' field metadata (``HfArgumentParser``); this is the same idea for Typer.
``command`` gives the command a signature of ``typer.Option``s (or ``typer.Argument``s) made from the fields,
and calls the command's body with the constructed dataclass. The options that several commands take are
defined here once, in small dataclasses that a command's options inherit:

- ``PolicyOptions``: ``--policy``, ``--model`` (eval, probe, train);
- ``SeedOption``: ``--seed`` (eval, probe, train, experiment, pretrain-clip, analyze);
- ``SamplingOptions``: ``--cfg``, ``--temperature``, ``--top-k`` (eval, probe, train);
- ``DeviceOption``: ``--device`` (eval, probe, metrics, train, pretrain, experiment);
- ``MetricFlags``: ``--metrics`` and the CLIP, FID and preference options (eval, metrics);
- ``ScorerOptionFlag``: ``--scorer-option`` (eval, scorers check);
- ``ConfigOptions``: ``--config``, ``--set`` (train, dryrun);
- ``ProgressOption``: ``--progress/--no-progress`` (train, pretrain, pretrain-clip);
- ``ResamplesOption``: ``--n-resamples`` (probe, analyze).

``dryrun``'s ``--device`` is not ``DeviceOption``: it names where fake tensors are made (cuda without a GPU), not
a device to run on. ``report`` and the ``suites`` commands take none of these.

A field may say where it does not apply (``not_for``: a context name and the reason); a command asks
``refused`` for the options the user gave in such a context and prints one line (``eval`` does: the
WISE options outside ``--suite wise``, the generation options with ``--images``, ...). A command may change a
shared option's default (``command(..., defaults=...)``): ``train`` takes ``--seed`` and the sampling options
as overrides of its config, so there they default to "not given".
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import typer

from irisbench.cli.shared import Command, app

# Contexts in which an option may not apply (``eval``'s): the keys of a field's ``not_for``
IMAGES = "--images"  # scoring a folder of images (suites other than wise)
GENERATED = "eval without --images"  # generating the images (suites other than wise)
WISE = "--suite wise"
WISE_IMAGES = "--suite wise --images"  # judging a folder of images
WISE_GENERATED = "--suite wise without --images"  # generating every prompt's image
NOT_WISE = "suites other than wise"

NO_MODEL = "the folder's images are scored, no model is loaded"
DEVICE_HELP = ("cpu, cuda or cuda:N (default: cuda when a GPU is visible, else cpu; under torchrun each process "
               "takes cuda:LOCAL_RANK).")


def option(default: Any, help: str, *decls: str, argument: bool = False,
           not_for: Mapping[str, str] | None = None) -> Any:
    """A dataclass field that is a command-line option: ``default`` (``...``: required), ``help``, the flag
    names ``decls`` (default: ``--field-name``), ``argument`` for a positional one, and the contexts it does
    not apply in (``not_for``: context -> reason)."""
    meta = {"help": help, "decls": decls, "argument": argument, "not_for": dict(not_for or {})}
    if default is ...:
        return field(metadata=meta)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(kw_only=True)
class Options:
    """The base of every command's options. ``given``: the fields the user set on the command line."""

    given: frozenset[str] = field(default=frozenset(), repr=False, compare=False, metadata={"cli": False})

    @classmethod
    def cli_fields(cls) -> list[Field]:
        return [f for f in fields(cls) if f.metadata.get("cli", True)]

    @classmethod
    def flag(cls, name: str) -> str:
        """The flag a user types for field ``name`` (its first long name)."""
        meta = next(f.metadata for f in cls.cli_fields() if f.name == name)
        return next((d for d in meta["decls"] if d.startswith("--")), "--" + name.replace("_", "-"))

    def refused(self, context: str) -> list[tuple[str, str]]:
        """(flag, reason) of every option given that does not apply in ``context``, in definition order."""
        return [(self.flag(f.name), f.metadata["not_for"][context]) for f in self.cli_fields()
                if f.name in self.given and context in f.metadata["not_for"]]


@dataclass(kw_only=True)
class PolicyOptions(Options):
    policy: str | None = option(None, "Policy name (see `irisbench ls`) or a checkpoint folder (default: "
                                      "shapes-base, or the config's).",
                                not_for={IMAGES: NO_MODEL, WISE_IMAGES: NO_MODEL})
    model: str | None = option(None, "Model id or local folder for policies that need one.",
                               not_for={IMAGES: NO_MODEL, WISE_IMAGES: NO_MODEL})


@dataclass(kw_only=True)
class SeedOption(Options):
    seed: int | None = option(0, "Base seed; every random draw derives from it.")


@dataclass(kw_only=True)
class SamplingOptions(Options):
    cfg: float | None = option(None, "Classifier-free guidance scale (default: the policy's or config's).",
                               not_for={IMAGES: NO_MODEL, WISE_IMAGES: NO_MODEL})
    temperature: float | None = option(None, "Sampling temperature (default: the policy's or config's).",
                                       not_for={IMAGES: NO_MODEL, WISE_IMAGES: NO_MODEL})
    top_k: int | None = option(None, "Top-k sampling (default: the policy's or config's).",
                               not_for={IMAGES: NO_MODEL, WISE_IMAGES: NO_MODEL})


@dataclass(kw_only=True)
class DeviceOption(Options):
    device: str | None = option(None, DEVICE_HELP, not_for={WISE_IMAGES: NO_MODEL})


@dataclass(kw_only=True)
class ScorerOptionFlag(Options):
    scorer_option: list[str] = option([], "KEY=VALUE for the suite's scorer, e.g. detector_model=DIR (repeatable).",
                                      not_for={WISE: "its judge is set with --judge and --judge-model"})


@dataclass(kw_only=True)
class ConfigOptions(Options):
    config: str = option("iris-shapes", "A training preset (see irisbench train --list-presets) or a YAML config "
                                        "file.", "--config", "-c")
    set_: list[str] = option([], "Override a field: key=value (repeatable); a dotted key sets one entry, e.g. "
                                 "policy_options.max_plan_tokens=1.", "--set", "-s")


@dataclass(kw_only=True)
class ProgressOption(Options):
    progress: bool = option(True, "Show a progress bar.")


@dataclass(kw_only=True)
class ResamplesOption(Options):
    n_resamples: int = option(2000, "Bootstrap resamples for every interval.")


NO_METRICS = "WISE computes no CLIP score, FID or KID"


@dataclass(kw_only=True)
class MetricFlags(Options):
    metrics: str | None = option(None, "Image metrics, any of clip,fid,kid,pickscore,hpsv2.",
                                 not_for={WISE: NO_METRICS})
    metric_option: list[str] = option([], "KEY=VALUE for pickscore/hpsv2, e.g. hpsv2_model=FILE (repeatable).",
                                      not_for={WISE: NO_METRICS})
    clip_model: str | None = option(None, "CLIP backbone for --metrics (default: the shapes CLIP).",
                                    not_for={WISE: NO_METRICS})
    clip_pretrained: str | None = option(None, "CLIP pretrained tag or local weights file.",
                                         not_for={WISE: NO_METRICS})
    clip_scale: str = option("raw", "CLIP score scale: raw, 100-clamp or 2.5.", not_for={WISE: NO_METRICS})
    fid_reference: Path | None = option(None, "Folder of reference PNGs for FID/KID (open world).",
                                        not_for={WISE: NO_METRICS})

    def metric_options(self, **extra: Any) -> Any:
        """The metrics these flags ask for: an ``irisbench.metrics.suite_metrics.MetricOptions``. A CLIP or FID
        option given without a metric that reads it is refused (``UsageError``), not ignored."""
        from irisbench.core.errors import UsageError, parse_key_values
        from irisbench.metrics.preference import metric_options
        from irisbench.metrics.suite_metrics import CLIP_METRICS, MetricOptions, check_scale_name, parse_metric_names

        names = parse_metric_names(self.metrics)
        readers = {"clip_model": CLIP_METRICS, "clip_pretrained": CLIP_METRICS, "clip_scale": ("clip",),
                   "fid_reference": ("fid", "kid")}
        for name, metrics in readers.items():
            if name in self.given and not set(metrics) & set(names):
                raise UsageError(f"{self.flag(name)} is read only by the metrics {', '.join(metrics)}: add one to "
                                 f"--metrics or drop {self.flag(name)}")
        opts = MetricOptions(names, self.clip_model, self.clip_pretrained,
                             check_scale_name(self.clip_scale),
                             str(self.fid_reference) if self.fid_reference else None, **extra)
        opts.preference = metric_options(opts.names, parse_key_values(self.metric_option, "--metric-option",
                                                                      numbers=False))
        return opts


OptionsT = TypeVar("OptionsT", bound=Options)


def command(name: str, options: type[OptionsT], *, defaults: Mapping[str, Any] | None = None,
            on: typer.Typer = app) -> Callable[[Callable[[OptionsT], Any]], Callable[..., Any]]:
    """Register ``body(options)`` as the command ``name`` of ``on`` (the ``irisbench`` app), its flags made from
    ``options``'s fields; the command's help is ``body``'s docstring.

    ``defaults`` replaces a field's default for this command (``...``: the option is required)."""
    defaults = dict(defaults or {})
    hints = typing.get_type_hints(options)
    params = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]
    for f in options.cli_fields():
        default = defaults.pop(f.name, _default(f))
        meta = f.metadata
        info = typer.Argument(default, help=meta["help"]) if meta["argument"] else \
            typer.Option(default, *meta["decls"], help=meta["help"])
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info,
                                        annotation=hints[f.name]))
    if defaults:
        raise TypeError(f"command {name}: defaults for unknown options {sorted(defaults)}")

    def register(body: Callable[[OptionsT], Any]) -> Callable[..., Any]:
        def run(ctx: typer.Context, **values: Any) -> Any:
            return body(options(**values, given=given(ctx, values)))

        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        run.__doc__, run.__name__, run.__module__ = body.__doc__, body.__name__, body.__module__
        on.command(name, cls=Command)(run)
        return run

    return register


def given(ctx: typer.Context, names: Iterable[str]) -> frozenset[str]:
    """The parameters among ``names`` that the user gave on the command line (not left at their default)."""
    # the source by name: typer's click (vendored or not) has its own enum
    return frozenset(n for n in names
                     if getattr(ctx.get_parameter_source(n), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP"))


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return ...
