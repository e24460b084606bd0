"""Janus-Pro checkpoint folders: find a local transformers-format folder and check it before loading.

Nothing is downloaded: a hub id is accepted only when it is already in the local Hugging Face cache. Only
safetensors weights are accepted (never pickles), and DeepSeek's original remote-code layout is refused with
the conversion to run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from irisbench.core.errors import IrisbenchError, UsageError

REQUIRED_FILES = ("config.json", "tokenizer_config.json")


class JanusCheckpointError(IrisbenchError, ValueError):
    """A Janus checkpoint folder is missing, incomplete or in the wrong format."""


def resolve_checkpoint(model_id_or_path: str | Path) -> Path:
    """A local Janus folder in transformers format with safetensors weights, or a clear error.

    A hub id is accepted only when it is already in the local Hugging Face cache: nothing is downloaded.
    """
    path = Path(model_id_or_path).expanduser()
    if not path.is_dir():
        name = str(model_id_or_path)
        if name.count("/") == 1 and not path.exists():
            try:
                from huggingface_hub import snapshot_download

                path = Path(snapshot_download(name, local_files_only=True))
            except Exception as err:  # any failure means "not available offline"
                raise JanusCheckpointError(
                    f"{name}: not a local folder and not in the local Hugging Face cache; nothing is "
                    f"downloaded here. Fetch it first, e.g. `hf download {name} --local-dir <folder>`, "
                    f"and pass the folder ({type(err).__name__})."
                ) from err
        else:
            raise JanusCheckpointError(f"{path}: no such checkpoint folder")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if not (path / "processor_config.json").is_file() and not (path / "preprocessor_config.json").is_file():
        missing.append("processor_config.json (or preprocessor_config.json)")
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer.model").is_file():
        missing.append("tokenizer.json (or tokenizer.model)")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError) as err:
            raise JanusCheckpointError(f"{index}: unreadable safetensors index ({err})") from err
        missing += [f"{s} (listed in model.safetensors.index.json)" for s in shards if not (path / s).is_file()]
    elif not (path / "model.safetensors").is_file():
        hint = ""
        if (path / "pytorch_model.bin").is_file() or (path / "pytorch_model.bin.index.json").is_file():
            hint = (" (this folder holds pytorch_model.bin: only safetensors are loaded. The original "
                    "deepseek-ai/Janus-Pro-* layout needs transformers' convert_janus_weights_to_hf.py; "
                    "deepseek-community/Janus-Pro-1B is already converted)")
        missing.append("model.safetensors (or model.safetensors.index.json)" + hint)
    if missing:
        raise JanusCheckpointError(f"{path}: incomplete Janus checkpoint, missing " + "; ".join(missing))
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (ValueError, AttributeError) as err:
        raise JanusCheckpointError(f"{path / 'config.json'}: not a JSON object ({err})") from err
    if model_type != "janus":
        hint = (" (DeepSeek's remote-code layout: convert it with transformers' convert_janus_weights_to_hf.py)"
                if model_type == "multi_modality" else "")
        raise JanusCheckpointError(
            f"{path / 'config.json'}: field model_type is {model_type!r}, expected 'janus', a transformers-format "
            f"Janus checkpoint such as deepseek-community/Janus-Pro-1B{hint}"
        )
    return path


def check_expected_config(path: Path, expect: dict[str, Any]) -> None:
    """Refuse a folder whose ``config.json`` does not match what a recipe was written for.

    ``expect`` (policy option ``expect``, e.g. ``{hidden_size: 2048, num_hidden_layers: 24, dtype: bfloat16}``):
    keys of ``text_config`` (the language model) and ``dtype``, compared with ``config.json``'s
    ``text_config`` and its ``dtype`` (or ``torch_dtype``) field. One line names the file, the field, both
    values.
    """
    from irisbench.core.devices import dtype_name

    if not isinstance(expect, dict):
        raise UsageError(f"policy option expect must be a mapping of config fields, got {expect!r}")
    config_path = path / "config.json"
    config = json.loads(config_path.read_text())
    text = config.get("text_config") or {}
    for key, want in expect.items():
        if key in ("dtype", "torch_dtype"):
            have = config.get("dtype", config.get("torch_dtype", text.get("dtype", text.get("torch_dtype"))))
            if have is None or dtype_name(have) != dtype_name(want):
                raise JanusCheckpointError(f"{config_path}: field dtype is {have!r}, the recipe expects "
                                           f"{dtype_name(want)!r} (policy option expect)")
            continue
        have = text.get(key)
        if have != want:
            raise JanusCheckpointError(f"{config_path}: field text_config.{key} is {have!r}, the recipe expects "
                                       f"{want!r} (policy option expect): is this the model the preset is for?")
