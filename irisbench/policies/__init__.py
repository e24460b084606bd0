"""Text-to-image policies behind one contract (``irisbench.policies.base``), loaded by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irisbench.core.errors import UsageError
from irisbench.core.registry import POLICIES

NEEDS_MODEL = {"shapes-lm", "janus-pro"}


# policies with a torch model: they take ``device``
MODEL_POLICIES = {"shapes-base", "textures-base", "shapes-lm", "janus-pro", "janus-shapes"}
# policies whose model is optional: a shipped default, or --model FOLDER
OPTIONAL_MODEL = {"janus-shapes"}


def load_policy(name: str, model: str | None = None, *, device: str | None = None, **kwargs: Any) -> Any:
    """A policy object from a registered name (``--policy``) and, where needed, a model id/path.

    A path to a shapes checkpoint folder given as the name is loaded as ``shapes-lm``; a LoRA adapter folder
    (``irisbench.policies.lora``) as its base + adapters, ``model`` replacing the recorded base (``trainable``:
    adapters kept separate, for resuming; else merged). ``device`` (a resolved device string,
    ``irisbench.core.devices``) goes to policies with a model; the others ignore it.
    """
    if name not in POLICIES and (Path(name) / "adapter_config.json").is_file():
        from irisbench.policies.lora import load_lora

        return load_lora(name, model, load_policy=load_policy, needs_model=NEEDS_MODEL, device=device, **kwargs)
    if name not in POLICIES and Path(name).is_dir():
        name, model = _kind_of_folder(Path(name)), name
    factory = POLICIES.load(name)  # unknown names raise with did-you-mean
    if device is not None and name in MODEL_POLICIES:
        kwargs["device"] = device
    if name in NEEDS_MODEL:
        if not model:
            raise UsageError(f"policy {name!r} needs --model (a model id or a local folder)")
        return factory(model, **kwargs)
    if name in OPTIONAL_MODEL:
        return factory(model, **kwargs)
    if model:
        raise UsageError(f"policy {name!r} takes no --model (got {model!r})")
    return factory(**kwargs)


def _kind_of_folder(path: Path) -> str:
    """Which policy a checkpoint folder holds: a Janus model (config.json model_type; a shapes-world one
    when ``irisbench_policy.json`` says so) or a shapes LM."""
    import json

    config = path / "config.json"
    if config.is_file():
        try:
            if json.loads(config.read_text(encoding="utf-8")).get("model_type") == "janus":
                meta = path / "irisbench_policy.json"
                if meta.is_file() and json.loads(meta.read_text(encoding="utf-8")).get("policy") == "janus-shapes":
                    return "janus-shapes"
                return "janus-pro"
        except (json.JSONDecodeError, AttributeError):
            pass
    return "shapes-lm"
