"""Preference models as scores of an image against its prompt: PickScore and HPS v2.1 (both CLIP-H/14 towers).

Usage, the T2I-R1 preset and why ImageReward is not here: docs/preference-models.md.

Each model's score is the formula of its official code, on the towers' L2-normalised embeddings:

- ``pickscore`` (Kirstain et al. 2023, PickScore_v1): a ``transformers`` CLIPModel folder (by default the hub id
  ``yuvalkirstain/PickScore_v1``, looked up in the local cache only) with the processor of
  ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` as the model card does; score =
  ``logit_scale.exp() * cos(image, text)`` (the model card's ``model.logit_scale.exp() * (text_embs @
  image_embs.T)``; its optional softmax over candidate images is a ranking, not a per-image score, and is not
  applied). Prompts are truncated to the text tower's context (77 tokens) as the card's processor call does.
- ``hpsv2`` (Wu et al. 2023, HPS v2.1): an open_clip ``ViT-H-14`` whose weights are the state dict of
  ``HPS_v2.1_compressed.pt`` (``checkpoint["state_dict"]``, as hpsv2's ``img_score.py`` loads it); score =
  ``cos(image, text)``: ``img_score.py`` takes ``torch.diagonal(image_features @ text_features.T)`` of the
  model's normalised features, without the logit scale. Prompts are truncated by open_clip's tokenizer (77).
  The official file is a pickle: it is read only with ``allow_pickle=True`` (``torch.load(weights_only=True)``),
  or convert it once to ``.safetensors``.

Departures from the official code: float32 on the given device instead of CUDA autocast; the HPS image
preprocessing is current open_clip's for ViT-H-14 (bicubic resize, centre crop, OpenAI mean/std), not that of
hpsv2's vendored open_clip fork; on the square images irisbench makes both only resize, but this was not compared
against the hpsv2 package (not installed here).

Nothing is downloaded: ``go_offline()`` first, ``local_files_only=True`` on every ``from_pretrained``, files and
folders from this machine only. A folder or file of another architecture is one ``PreferenceModelError`` line
naming it and the option that chooses it (``reward_options`` ``model``/``processor``/``backbone``, or
``--metric-option pickscore_model=...``). torch, transformers and open_clip are imported inside functions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irisbench.core.errors import UsageError
from irisbench.metrics.clip_model import as_image_list, file_sha256

PREFERENCE_MODELS: dict[str, str] = {
    "pickscore": "logit_scale.exp() * cos(image, text), PickScore_v1 (transformers CLIPModel, CLIP-H/14)",
    "hpsv2": "cos(image, text), HPS v2.1 weights in open_clip ViT-H-14 (hpsv2 img_score.py, no logit scale)",
}
PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
HPS_BACKBONE = "ViT-H-14"
HPS_HUB_FILE = ("xswu/HPSv2", "HPS_v2.1_compressed.pt")  # looked up in the local Hugging Face cache only
MAX_TOKENS = 77  # the official calls' max_length
# per-model options (reward_options keys; --metric-option NAME_KEY) and their defaults
OPTIONS: dict[str, dict[str, Any]] = {
    "pickscore": {"model": PICKSCORE_MODEL, "processor": PICKSCORE_PROCESSOR},
    "hpsv2": {"model": None, "backbone": HPS_BACKBONE, "allow_pickle": False},
}


class PreferenceModelError(UsageError):
    """A preference model that cannot be loaded: missing, not local, or of another architecture."""


def fix(name: str, key: str, value: str = "PATH") -> str:
    """Where option ``key`` of preference model ``name`` is set (a reward's options, ``--metric-option``)."""
    return f"set {key}: {value} in reward_options.{name}, or --metric-option {name}_{key}={value}"


@dataclass
class PreferenceModel:
    """A loaded preference model: normalised embeddings from its two towers and ``scale`` times their cosine."""

    name: str
    image_embed: Callable[[list[np.ndarray]], Any]  # uint8 images -> (N, D) torch features (not normalised)
    text_embed: Callable[[list[str]], Any]  # prompts -> (N, D) torch features (not normalised)
    scale: float  # PickScore: logit_scale.exp(); HPS: 1
    source: dict[str, Any] = field(default_factory=dict)

    def image_embeddings(self, images: Any, batch_size: int = 32) -> np.ndarray:
        ims = as_image_list(images)
        out = [_normalised(self.image_embed(ims[s:s + batch_size])) for s in range(0, len(ims), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0))

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        return _normalised(self.text_embed(list(texts)))

    def score(self, images: Any, prompts: Sequence[str]) -> np.ndarray:
        """``scale * cos(image_i, prompt_i)`` per image (float64, shape (N,))."""
        ims = as_image_list(images)
        if isinstance(prompts, str) or len(prompts) != len(ims):
            raise UsageError(f"{self.name} needs one prompt per image: got {len(ims)} images and "
                             f"{1 if isinstance(prompts, str) else len(prompts)} prompts")
        if not ims:
            return np.zeros(0, dtype=np.float64)
        uniq = list(dict.fromkeys(prompts))
        index = {t: i for i, t in enumerate(uniq)}
        text = self.text_embeddings(uniq)
        img = self.image_embeddings(ims)
        return self.scale * np.einsum("nd,nd->n", img, text[[index[t] for t in prompts]])

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "formula": PREFERENCE_MODELS[self.name], "scale": self.scale, **self.source}


def _normalised(features: Any) -> np.ndarray:
    f = features.detach().float().cpu().numpy().astype(np.float64)
    return f / np.linalg.norm(f, axis=-1, keepdims=True)


def _looks_like_path(spec: str) -> bool:
    """A local path rather than a hub id ("org/name")."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec


def _cached_folder(spec: str, cache_dir: str | None = None) -> Path | None:
    """The snapshot folder of hub id ``spec`` if its config.json is in the local Hugging Face cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    if _looks_like_path(spec) or Path(spec).expanduser().exists():
        return None
    try:
        hit = try_to_load_from_cache(spec, "config.json", cache_dir=cache_dir)
    except ValueError:  # not a valid repo id
        return None
    return Path(hit).parent if isinstance(hit, str) and Path(hit).is_file() else None


def _resolve_folder(spec: str, what: str, hint: str) -> Path:
    """A local folder, or a hub id's snapshot in the local Hugging Face cache."""
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return folder
    snapshot = _cached_folder(spec)
    if snapshot is not None:
        return snapshot
    raise PreferenceModelError(f"{what} {spec!r} is neither a local folder nor in the local Hugging Face cache "
                               f"(irisbench never downloads): {hint}")


def load_pickscore(model: str = PICKSCORE_MODEL, processor: str | None = PICKSCORE_PROCESSOR, *,
                   device: str = "cpu") -> PreferenceModel:
    """PickScore from a transformers CLIPModel folder (``model``) and a CLIP processor folder (``processor``;
    None: the model folder's own)."""
    from irisbench.scorers.offline import LOCAL_ONLY, go_offline

    go_offline()
    folder = _resolve_folder(str(model), "pickscore model", fix("pickscore", "model", "FOLDER"))
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PreferenceModelError(f"pickscore model {folder}: no readable config.json ({e}); PickScore is a "
                                   f"transformers CLIPModel folder ({fix('pickscore', 'model', 'FOLDER')})") from None
    kind = config.get("model_type") if isinstance(config, dict) else None
    if kind != "clip":
        raise PreferenceModelError(
            f"pickscore model {folder} is a {kind!r} model ({', '.join(config.get('architectures') or []) or '?'}"
            f"), not a CLIPModel (model_type 'clip', as {PICKSCORE_MODEL}): {fix('pickscore', 'model', 'FOLDER')}")
    proc_folder = folder if processor is None else _resolve_folder(str(processor), "pickscore processor",
                                                                   fix("pickscore", "processor", "FOLDER"))
    import torch
    from transformers import CLIPModel, CLIPProcessor

    try:
        net = CLIPModel.from_pretrained(folder, use_safetensors=True, **LOCAL_ONLY).to(device).eval()
        proc = CLIPProcessor.from_pretrained(proc_folder, **LOCAL_ONLY)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        text = " ".join(str(e).split())[:300]
        raise PreferenceModelError(f"pickscore: cannot load {folder} with processor {proc_folder} "
                                   f"({type(e).__name__}: {text}); {fix('pickscore', 'model', 'FOLDER')} "
                                   "(and processor)") from None
    max_length = min(MAX_TOKENS, int(net.config.text_config.max_position_embeddings))

    def image_embed(ims: list[np.ndarray]) -> Any:
        from PIL import Image

        pixels = proc(images=[Image.fromarray(im) for im in ims], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            return net.visual_projection(net.vision_model(pixel_values=pixels.to(device)).pooler_output)

    def text_embed(texts: list[str]) -> Any:
        tok = proc(text=texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            out = net.text_model(input_ids=tok["input_ids"].to(device),
                                 attention_mask=tok["attention_mask"].to(device))
            return net.text_projection(out.pooler_output)

    scale = float(net.logit_scale.exp().item())
    return PreferenceModel("pickscore", image_embed, text_embed, scale,
                           {"model_folder": str(folder), "processor_folder": str(proc_folder)})


def _hps_file(model: str | None) -> Path:
    if model is None:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(*HPS_HUB_FILE)
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
        raise PreferenceModelError(f"hpsv2: no weights given and {'/'.join(HPS_HUB_FILE)} is not in the local "
                                   f"Hugging Face cache (irisbench never downloads): {fix('hpsv2', 'model')} "
                                   "(HPS_v2.1_compressed.pt or its .safetensors conversion)")
    path = Path(model).expanduser()
    if not path.is_file():
        raise PreferenceModelError(f"hpsv2 weights file {path} does not exist ({fix('hpsv2', 'model')})")
    return path


def read_state_dict(path: Path, allow_pickle: bool) -> dict[str, Any]:
    """A state dict from ``.safetensors``, or from a pickle (``{"state_dict": ...}`` or bare) if allowed;
    a leading ``module.`` (a DDP save) is removed from every key."""
    from irisbench.metrics.clip_score import PICKLE_SUFFIXES, PICKLE_WARNING

    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    elif suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise PreferenceModelError(f"hpsv2: refusing the pickle weights file {path} without allow_pickle "
                                       f"({fix('hpsv2', 'allow_pickle', 'true')}): {PICKLE_WARNING}")
        import torch

        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - an unreadable pickle is the user's file, said in one line
            raise PreferenceModelError(f"hpsv2: cannot read {path} ({type(e).__name__}: {str(e)[:200]})") from None
    else:
        raise PreferenceModelError(f"hpsv2 weights file {path} has suffix {suffix!r}; expected .safetensors or "
                                   f"{', '.join(PICKLE_SUFFIXES)}")
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise PreferenceModelError(f"hpsv2: {path} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def architecture_mismatch(expected: Mapping[str, Any], given: Mapping[str, Any]) -> str | None:
    """What keeps ``given`` (name -> tensor) from loading strictly into a model with state ``expected``."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} {tuple(given[k].shape)} vs {tuple(expected[k].shape)}" for k in expected
              if k in given and tuple(given[k].shape) != tuple(expected[k].shape)]
    parts = [f"{len(v)} {what} (e.g. {v[0]})" for v, what in
             ((missing, "missing keys"), (unexpected, "unexpected keys"), (shapes, "tensors of another shape"))
             if v]
    return "; ".join(parts) or None


def load_hpsv2(model: str | None = None, backbone: str = HPS_BACKBONE, *, allow_pickle: bool = False,
               device: str = "cpu") -> PreferenceModel:
    """HPS v2.1: the state dict in ``model`` (a file) loaded strictly into open_clip ``backbone``."""
    from irisbench.scorers.offline import go_offline

    go_offline()
    path = _hps_file(model)
    state = read_state_dict(path, allow_pickle)
    import open_clip
    import torch

    if backbone not in open_clip.list_models():
        raise PreferenceModelError(f"hpsv2: {backbone!r} is not an open_clip model name "
                                   f"({fix('hpsv2', 'backbone', 'NAME')}; HPS v2.1 is {HPS_BACKBONE})")
    before = logging.root.manager.disable
    logging.disable(max(before, logging.WARNING))  # open_clip warns "initialized randomly": weights come next
    try:
        net, _, preprocess = open_clip.create_model_and_transforms(backbone, pretrained=None, device="cpu")
    finally:
        logging.disable(before)
    wrong = architecture_mismatch(net.state_dict(), state)
    if wrong:
        raise PreferenceModelError(f"hpsv2: {path} is not a state dict of open_clip {backbone}: {wrong}; "
                                   f"{fix('hpsv2', 'model')} (HPS_v2.1_compressed.pt), or backbone: NAME for its "
                                   "architecture")
    net.load_state_dict(state)
    net = net.to(device).eval()
    tokenizer = open_clip.get_tokenizer(backbone)

    def image_embed(ims: list[np.ndarray]) -> Any:
        from PIL import Image

        pixels = torch.stack([preprocess(Image.fromarray(im)) for im in ims]).to(device)
        with torch.no_grad():
            return net.encode_image(pixels)

    def text_embed(texts: list[str]) -> Any:
        with torch.no_grad():
            return net.encode_text(tokenizer(texts).to(device))

    return PreferenceModel("hpsv2", image_embed, text_embed, 1.0,
                           {"backbone": backbone, "weights_file": str(path), "weights_sha256": file_sha256(path)})


def check_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` over ``OPTIONS[name]``'s defaults; an unknown key is one line."""
    if name not in OPTIONS:
        raise PreferenceModelError(f"unknown preference model {name!r}; known: {', '.join(OPTIONS)}")
    unknown = sorted(set(options) - set(OPTIONS[name]))
    if unknown:
        raise PreferenceModelError(f"{name}: unknown option(s) {unknown}; its options: {list(OPTIONS[name])}")
    return {**OPTIONS[name], **options}


def load_preference(name: str, options: Mapping[str, Any] | None = None, *, device: str = "cpu") -> PreferenceModel:
    """Preference model ``name`` (``PREFERENCE_MODELS``) with ``options`` (``OPTIONS[name]``'s keys)."""
    opts = check_options(name, options or {})
    if name == "pickscore":
        return load_pickscore(opts["model"], opts["processor"], device=device)
    allow = opts["allow_pickle"]
    if isinstance(allow, str):
        allow = allow.strip().lower() in ("1", "true", "yes")
    return load_hpsv2(opts["model"], opts["backbone"], allow_pickle=bool(allow), device=device)


def metric_options(names: Sequence[str], given: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``--metric-option NAME_KEY=VALUE`` values (e.g. ``pickscore_model=/models/PickScore_v1``) per model."""
    out: dict[str, dict[str, Any]] = {n: {} for n in names if n in PREFERENCE_MODELS}
    valid = [f"{n}_{k}" for n in out for k in OPTIONS[n]]
    for key, value in given.items():
        name = next((n for n in out if key.startswith(n + "_") and key[len(n) + 1:] in OPTIONS[n]), None)
        if name is None:
            raise UsageError(f"--metric-option {key}: not an option of the asked metrics (valid: "
                             f"{', '.join(valid) or 'none: add pickscore or hpsv2 to --metrics'})")
        out[name][key[len(name) + 1:]] = value
    return out


def option_keys(name: str) -> set[str]:
    """The prefixed option keys of ``name`` (``--metric-option`` / ``--scorer-option``: ``pickscore_model``...)."""
    return {f"{name}_{k}" for k in OPTIONS[name]}


FolderCheck = Callable[[Path, bool], list[str]]  # scorers.weights.check_transformers_folder: what a folder lacks
Row = tuple[str, str, str, str | None, bool, str]  # component, option, source, path found, ok, detail


def _folder_lacks(spec: str, keep: Callable[[str], bool], cache_dir: str | None, needs_tokenizer: bool,
                  folder_lacks: FolderCheck) -> tuple[str | None, list[str] | str]:
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        if _looks_like_path(spec) or folder.exists():
            return None, f"no such folder: {folder}"
        snapshot = _cached_folder(spec, cache_dir)
        if snapshot is None:
            return None, (f"hub id {spec!r} is not in the local Hugging Face cache (irisbench never downloads): "
                          "download it on a machine with network, or pass a local folder")
        folder = snapshot
    return str(folder), [x for x in folder_lacks(folder, needs_tokenizer) if keep(x)]


def check_preference(name: str, options: Mapping[str, Any], folder_lacks: FolderCheck,
                     cache_dir: str | None = None) -> list[Row]:
    """``irisbench scorers check`` rows of preference model ``name``: what it would load with ``options``
    (prefixed keys, e.g. ``pickscore_model``) and whether it is on this machine (``folder_lacks``: what a
    transformers folder lacks, from ``irisbench.scorers.weights``)."""
    opts = check_options(name, {k[len(name) + 1:]: v for k, v in options.items()})
    if name == "pickscore":
        rows = []
        for comp, key, needs in (("PickScore model (transformers CLIPModel)", "model", False),
                                 ("processor (CLIP image processor + tokenizer)", "processor", True)):
            spec = str(opts[key] or opts["model"])
            path, lacks = _folder_lacks(spec, (lambda x: not x.startswith("preprocessor")) if key == "model" else
                                        (lambda x: x.startswith(("preprocessor", "tokenizer"))), cache_dir, needs,
                                        folder_lacks)
            if isinstance(lacks, str):
                rows.append((comp, f"{name}_{key}", spec, path, False, lacks))
                continue
            kind = None
            if key == "model" and "config.json" not in lacks:
                try:
                    kind = json.loads((Path(str(path)) / "config.json").read_text(encoding="utf-8")).get("model_type")
                except (OSError, ValueError, AttributeError):
                    kind = "unreadable"
                if kind != "clip":
                    lacks.append(f"a CLIPModel config.json (model_type 'clip'; this one is {kind!r})")
            rows.append((comp, f"{name}_{key}", spec, path, not lacks,
                                  f"lacks: {', '.join(lacks)}" if lacks else "complete"))
        return rows
    comp, source = f"HPS v2.1 weights (open_clip {opts['backbone']})", str(opts["model"] or "/".join(HPS_HUB_FILE))
    try:
        import open_clip

        if opts["backbone"] not in open_clip.list_models():
            return [(comp, f"{name}_backbone", source, None, False,
                              f"{opts['backbone']!r} is not an open_clip model name")]
        path = _hps_file(opts["model"])
    except PreferenceModelError as e:
        return [(comp, f"{name}_model", source, None, False, str(e))]
    from irisbench.metrics.clip_score import PICKLE_SUFFIXES

    allow = str(opts["allow_pickle"]).strip().lower() in ("1", "true", "yes")
    if path.suffix.lower() in PICKLE_SUFFIXES and not allow:
        return [(comp, f"{name}_model", source, str(path), False,
                          f"a pickle file: set {name}_allow_pickle=true for a file you trust, or convert it to "
                          ".safetensors")]
    if path.suffix.lower() not in (".safetensors", *PICKLE_SUFFIXES):
        return [(comp, f"{name}_model", source, str(path), False, f"suffix {path.suffix!r}")]
    return [(comp, f"{name}_model", source, str(path), True, "local weights file")]
