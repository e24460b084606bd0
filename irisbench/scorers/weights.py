"""``irisbench scorers check``: which local weights each real-model scorer would load, and whether they are there.

For a GPU box prepared before a long run: nothing is loaded and nothing is downloaded. Each scorer's
components are resolved from the same ``--scorer-option KEY=VALUE`` values ``eval`` accepts (checked against
the scorer's signature, as ``eval`` does), then looked up:

- transformers models (Mask2Former, BLIP-VQA, OWLv2): a local folder, or a hub id looked up in the local
  Hugging Face cache (``huggingface_hub.try_to_load_from_cache``). The folder must hold ``config.json``,
  safetensors weights (``model.safetensors``, or ``model.safetensors.index.json`` and every shard it lists:
  the scorers load with ``use_safetensors=True``), the image processor's config (``preprocessor_config.json``
  or ``processor_config.json``) and, for models with a text tower, a tokenizer (``tokenizer_config.json`` with
  ``tokenizer.json``, ``vocab.txt`` or ``vocab.json``).
- open_clip models (the CLIP colour classifier of GenEval, CLIP of CompBench): the backbone must be an
  open_clip model name; ``pretrained`` an existing file, or a pretrained tag whose file is in the local
  Hugging Face or open_clip cache (the lookup ``load_clip`` uses). No ``pretrained`` means random weights,
  reported as missing.
- preference models (``pickscore``, ``hpsv2``: ``irisbench.metrics.preference``), with prefixed options
  (``pickscore_model``, ``pickscore_processor``, ``hpsv2_model``, ``hpsv2_backbone``, ``hpsv2_allow_pickle``):
  PickScore's CLIPModel folder and its processor folder, HPS v2.1's weights file.

A folder that would pass here can still fail to load (a corrupt file, an architecture transformers does not
know); this check is about presence, not validity.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from irisbench.core.errors import UsageError

REAL_SCORERS = ("geneval-mask2former", "compbench-real")
PREFERENCE_MODELS = ("pickscore", "hpsv2")  # irisbench.metrics.preference: rewards and eval --metrics


@dataclass
class Component:
    scorer: str
    component: str
    options: str  # the --scorer-option keys that choose it
    source: str  # what the scorer would load (model id / folder / backbone + pretrained)
    path: str | None  # the local folder or file found, if any
    ok: bool
    detail: str


def scorer_components(name: str, options: dict[str, Any]) -> list[tuple[str, str, str, Any]]:
    """(component, option keys, kind, spec) for scorer ``name`` with ``options`` over its defaults."""
    from irisbench.core.registry import SCORERS

    cls = SCORERS.load(name)
    params = inspect.signature(cls).parameters
    unknown = [k for k in options if k not in params]
    if unknown:
        valid = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        raise UsageError(f"scorer {name!r} has no option(s) {unknown}; its options: {valid}")
    value = {k: options.get(k, p.default) for k, p in params.items()}
    if name == "geneval-mask2former":
        return [("detector (Mask2Former)", "detector_model", "transformers-vision", value["detector_model"]),
                ("color classifier (CLIP)", "clip_model, clip_pretrained", "open_clip",
                 (value["clip_model"], value["clip_pretrained"]))]
    if name == "compbench-real":
        return [("BLIP-VQA", "blip", "transformers-text", value["blip"]),
                ("open-vocabulary detector (OWLv2)", "detector", "transformers-text", value["detector"]),
                ("CLIP", "clip_model, clip_pretrained", "open_clip", (value["clip_model"], value["clip_pretrained"]))]
    raise UsageError(f"scorer {name!r} loads no model weights; real-model scorers: {', '.join(REAL_SCORERS)}")


def check_transformers_folder(folder: Path, needs_tokenizer: bool) -> list[str]:
    """What a transformers model folder lacks (empty list: complete)."""
    lacks = []
    if not (folder / "config.json").is_file():
        lacks.append("config.json")
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        pass
    elif index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as e:
            lacks.append(f"a readable {index.name} ({e})")
        else:
            lacks += [s for s in shards if not (folder / s).is_file()]
    elif any(folder.glob("*.bin")):
        lacks.append("model.safetensors (only pickle .bin weights here; the scorers load safetensors only)")
    else:
        lacks.append("model.safetensors")
    if not any((folder / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
        lacks.append("preprocessor_config.json (or processor_config.json)")
    if needs_tokenizer:
        if not (folder / "tokenizer_config.json").is_file():
            lacks.append("tokenizer_config.json")
        if not any((folder / f).is_file() for f in ("tokenizer.json", "vocab.txt", "vocab.json")):
            lacks.append("tokenizer.json (or vocab.txt / vocab.json)")
    return lacks


def _hub_snapshot(repo_id: str, cache_dir: str | None) -> Path | None:
    """The local snapshot folder of a hub model id, if its config.json is in the Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir)
    except ValueError:  # not a valid repo id
        return None
    return Path(hit).parent if isinstance(hit, str) and os.path.isfile(hit) else None


def _looks_like_path(spec: str) -> bool:
    """A local path rather than a hub id ("org/name") or a pretrained tag."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec


def check_transformers(spec: str, needs_tokenizer: bool, cache_dir: str | None) -> tuple[str | None, bool, str]:
    folder = Path(spec).expanduser()
    if folder.is_dir():
        where = "local folder"
    elif _looks_like_path(spec) or folder.exists():
        return None, False, f"no such folder: {folder}"
    else:
        snapshot = _hub_snapshot(spec, cache_dir)
        if snapshot is None:
            return None, False, (f"hub id {spec!r} is not in the local Hugging Face cache (irisbench never downloads): "
                                 "download it on a machine with network, or pass a local folder")
        folder, where = snapshot, "Hugging Face cache"
    lacks = check_transformers_folder(folder, needs_tokenizer)
    if lacks:
        return str(folder), False, f"{where} lacks: {', '.join(lacks)}"
    return str(folder), True, f"{where}: complete"


def check_open_clip(model: str, pretrained: Any) -> tuple[str | None, bool, str]:
    import open_clip

    if model not in open_clip.list_models():
        return None, False, f"{model!r} is not an open_clip model name (open_clip.list_models())"
    if pretrained is None:
        return None, False, "no pretrained weights given: the model would have random weights"
    from irisbench.metrics.clip_score import PICKLE_SUFFIXES

    p = Path(str(pretrained)).expanduser()
    if p.is_file():
        if p.suffix.lower() in PICKLE_SUFFIXES:
            return str(p), False, "a pickle weights file: the scorers load safetensors only"
        return str(p), True, "local weights file"
    if p.suffix or _looks_like_path(str(pretrained)):
        return None, False, f"no such weights file: {p}"
    from irisbench.metrics.clip_score import ClipLoadError, _cached_tag_file

    try:
        found, looked, _ = _cached_tag_file(model, str(pretrained))
    except ClipLoadError as e:
        return None, False, str(e)
    if found is None:
        return None, False, (f"pretrained tag {pretrained!r} is not in the local caches (looked in: "
                             f"{'; '.join(looked) or 'nowhere: the tag has no download source'})")
    if found.suffix.lower() in PICKLE_SUFFIXES:
        return str(found), False, "cached as a pickle file only: the scorers load safetensors only"
    return str(found), True, "cached pretrained tag"


def check_scorers(names: list[str] | None = None, options: dict[str, Any] | None = None, *,
                  cache_dir: str | None = None) -> list[Component]:
    """One ``Component`` per model of each scorer in ``names`` (default: every real-model scorer).

    ``options`` are ``--scorer-option`` values; each must be an option of at least one of the scorers (a scorer
    gets those it accepts). ``cache_dir``: the Hugging Face hub cache (default: huggingface_hub's).
    """
    from irisbench.core.registry import SCORERS
    from irisbench.metrics.preference import check_preference, option_keys

    names = list(names or (*REAL_SCORERS, *PREFERENCE_MODELS))
    options = dict(options or {})
    for name in names:
        if name not in REAL_SCORERS and name not in PREFERENCE_MODELS:
            SCORERS.get(name)  # unknown names raise with did-you-mean
            raise UsageError(f"scorer {name!r} loads no model weights; real-model scorers: {', '.join(REAL_SCORERS)}")
    accepted = {name: option_keys(name) if name in PREFERENCE_MODELS else
                set(inspect.signature(SCORERS.load(name)).parameters) for name in names}
    unused = [k for k in options if not any(k in a for a in accepted.values())]
    if unused:
        raise UsageError(f"--scorer-option {unused}: not an option of {', '.join(names)}")
    out = []
    for name in names:
        mine = {k: v for k, v in options.items() if k in accepted[name]}
        if name in PREFERENCE_MODELS:
            out += [Component(name, *row) for row in check_preference(name, mine, check_transformers_folder, cache_dir)]
            continue
        for component, keys, kind, spec in scorer_components(name, mine):
            if kind == "open_clip":
                model, pretrained = spec
                source = f"open_clip {model} (pretrained={pretrained})"
                path, ok, detail = check_open_clip(str(model), pretrained)
            else:
                source = str(spec)
                path, ok, detail = check_transformers(str(spec), kind == "transformers-text", cache_dir)
            out.append(Component(name, component, keys, source, path, ok, detail))
    return out


def as_dicts(components: list[Component]) -> list[dict[str, Any]]:
    return [asdict(c) for c in components]


def option_hint(component: Component) -> str:
    """The ``--scorer-option`` that points ``component`` at local weights."""
    if component.options.startswith("clip_model"):
        return "--scorer-option clip_pretrained=FILE.safetensors"
    return f"--scorer-option {component.options}=PATH"


def require_weights(name: str, options: dict[str, Any] | None = None, *,
                    cache_dir: str | None = None) -> list[Component]:
    """``eval``'s check before it generates or reads anything: the ``scorers check`` of scorer ``name`` with
    ``options``; anything missing raises one ``ScorerWeightsError`` line naming the scorer, each missing model
    (what it would load, where it looked, why not) and the option to set. Scorers without weights pass."""
    from irisbench.scorers.offline import NEVER_DOWNLOADS, ScorerWeightsError, go_offline

    if name not in REAL_SCORERS:
        return []
    go_offline()  # before the first hub import of this run
    found = check_scorers([name], options, cache_dir=cache_dir)
    missing = [c for c in found if not c.ok]
    if missing:
        parts = [f"{c.component} {c.source}: {c.detail} (set {option_hint(c)})" for c in missing]
        raise ScorerWeightsError(f"scorer {name!r} cannot load its weights: {'; '.join(parts)}; {NEVER_DOWNLOADS}")
    return found


def weights_status(name: str) -> tuple[bool, str]:
    """``irisbench ls``'s view of a real-image scorer with its default options: (ready, what is missing).

    Cheap first: the transformers models are looked up (folders and the Hugging Face cache, no heavy import);
    only when they are all there is the full check run (it imports open_clip for the CLIP weights)."""
    missing = [component for component, _, kind, spec in scorer_components(name, {})
               if kind != "open_clip" and not check_transformers(str(spec), kind == "transformers-text", None)[1]]
    if not missing:
        missing = [c.component for c in check_scorers([name]) if not c.ok]
    return not missing, f"weights missing: {', '.join(missing)}" if missing else "weights found"
