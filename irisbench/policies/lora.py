"""LoRA adapters (``peft``) for the trainable policies: the Janus-Pro language model and the shapes LM.

``attach_lora`` injects LoRA layers into a policy's model in place (``peft.get_peft_model``: the model object
the policy holds now carries the adapters, every base weight frozen) and returns a ``LoraPolicy``, the same
policy seen through its adapters:

- ``save`` writes PEFT's format (``adapter_config.json`` + ``adapter_model.safetensors`` via
  ``save_pretrained``) and ``irisbench_policy.json`` (format ``irisbench.lora``: how to load the base, a
  fingerprint of the base weights the adapters sit on, the settings). No base weights are written.
- ``reference()`` is the KL reference of GRPO (beta > 0): the frozen base, computed by the same model with the
  adapters switched off (``PeftModel.disable_adapter``), so no second copy of the weights exists.
- the adapters' dropout runs wherever gradients are on (``GradDropout``: GRPO's gradient pass, as trl's
  ``model.train()`` does, and its recomputation under activation checkpointing), whatever the module mode; the
  policies stay in eval mode, and sampling, ``no_grad`` passes and the reference never drop.

``load_lora`` reads such a folder back: the base from its record (or ``--model``), refused when its targeted
weights differ from the fingerprint, then the adapters (``PeftModel.from_pretrained``, local only). For
evaluation the adapters are merged into the base weights (``merge_and_unload``: the sampling loops run at the
base model's speed); for resuming a run they stay separate and trainable.

Where LoRA goes: only the linear layers under the policy's ``lora_scope`` (Janus: ``model.language_model.``,
so SigLIP's own ``q_proj``/``k_proj``/``v_proj``, the aligners, the VQ model and both heads stay untouched;
shapes LM: ``model.layers.``), those whose names end with one of ``target_modules``. Defaults (r 16, alpha 32,
dropout 0.05, the attention and MLP projections of every decoder block) are the common LoRA recipe for
Llama-family RL fine-tuning (docs/lora.md). The shapes LM's fast sampling loop reads module weights directly:
with unmerged adapters it reads ``W + scaling B A`` (``shapes_step.Weights.of``), the merged weights.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import warnings
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from irisbench.core.errors import IrisbenchError, did_you_mean, read_json

FORMAT = "irisbench.lora"
POLICY_FILE = "irisbench_policy.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FINGERPRINT_SAMPLES = 256  # weights read per targeted layer (evenly spaced, exact values) for the fingerprint


class LoraError(IrisbenchError, ValueError):
    """A LoRA setting, adapter folder or base model that cannot be used; one line names what and where."""


@dataclass(frozen=True)
class LoraSettings:
    """The ``lora:`` block of a training config (absent: full fine-tuning)."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_TARGETS

    @classmethod
    def from_config(cls, raw: Any, where: str = "lora") -> LoraSettings:
        """Strict: unknown keys and wrong types are refused by name (``{}`` gives the defaults)."""
        if not isinstance(raw, dict):
            raise LoraError(f"{where} must be a mapping of r, alpha, dropout, target_modules ({{}} for the "
                            f"defaults), got {raw!r}")
        names = [f.name for f in fields(cls)]
        for key in raw:
            if key not in names:
                raise LoraError(f"{where}: unknown key {key!r} (valid: {', '.join(names)})."
                                f"{did_you_mean(str(key), names, n=1)}")
        values = {**asdict(cls()), **raw}
        r, alpha, dropout, targets = values["r"], values["alpha"], values["dropout"], values["target_modules"]
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            raise LoraError(f"{where}.r must be an integer >= 1, got {r!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise LoraError(f"{where}.alpha must be a number > 0, got {alpha!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise LoraError(f"{where}.dropout must be a number in [0, 1), got {dropout!r}")
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, (list, tuple)) or not targets or not all(
                isinstance(t, str) and t for t in targets):
            raise LoraError(f"{where}.target_modules must be a non-empty list of module names, got {targets!r}")
        return cls(r=r, alpha=float(alpha), dropout=float(dropout), target_modules=tuple(targets))

    @property
    def scaling(self) -> float:
        """The factor on ``B A x``: alpha / r (peft's default, not rsLoRA)."""
        return self.alpha / self.r


def target_names(model: Any, scope: str, targets: tuple[str, ...], owner: str = "the model") -> list[str]:
    """Names of the linear layers under ``scope`` whose names end with one of ``targets``; a target that
    matches none is refused with the candidates listed."""
    import torch

    linear = [n for n, m in model.named_modules() if n.startswith(scope) and isinstance(m, torch.nn.Linear)]
    for t in targets:
        if not any(n == t or n.endswith("." + t) for n in linear):
            candidates = sorted({n.rsplit(".", 1)[-1] for n in linear})
            raise LoraError(f"lora.target_modules: {t!r} is not a linear layer of {owner} under {scope!r}; "
                            f"candidates: {', '.join(candidates)} (set --set lora.target_modules=[...])")
    return [n for n in linear if any(n == t or n.endswith("." + t) for t in targets)]


def target_regex(scope: str, targets: tuple[str, ...]) -> str:
    """The ``target_modules`` regex peft full-matches against module names (stored in adapter_config.json)."""
    return re.escape(scope) + r"(?:.*\.)?(?:" + "|".join(re.escape(t) for t in targets) + ")"


def base_fingerprint(model: Any, names: list[str]) -> str:
    """A digest of the base weights of the targeted layers: ``FINGERPRINT_SAMPLES`` evenly spaced entries of
    each (exact values as float64, so any device and dtype give the same digest) with its name and shape."""
    import torch

    h = hashlib.sha256()
    for name in sorted(names):
        layer = model.get_submodule(name)
        w = getattr(layer, "base_layer", layer).weight.detach().reshape(-1)
        idx = torch.linspace(0, w.numel() - 1, min(FINGERPRINT_SAMPLES, w.numel()), device=w.device).long()
        h.update(f"{name}:{tuple(getattr(layer, 'base_layer', layer).weight.shape)}".encode())
        h.update(w[idx].to(torch.float64).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft 0.21 asks transformers 5 for a deprecated attribute while wrapping; nothing for the user."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


@functools.cache
def _grad_dropout_class() -> type:
    import torch

    class GradDropout(torch.nn.Dropout):
        """Dropout wherever gradients are on, whatever the module's mode: in GRPO's gradient pass and in its
        recomputation under activation checkpointing (which runs in backward, with the forward's RNG state), never
        in sampling, ``no_grad`` scoring or evaluation. The policies stay in eval mode throughout."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.dropout(x, self.p, torch.is_grad_enabled(), self.inplace)

    return GradDropout


def _scope(policy: Any) -> str:
    scope = getattr(policy, "lora_scope", None)
    if scope is None:
        raise LoraError(f"policy {getattr(policy, 'name', '?')!r} does not support LoRA (it names no lora_scope)")
    return scope


def _peft_config(settings: LoraSettings, scope: str) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, bias="none",
                      target_modules=target_regex(scope, settings.target_modules))


def attach_lora(policy: Any, settings: LoraSettings, base: dict[str, Any], *, seed: int = 0) -> LoraPolicy:
    """Inject LoRA adapters into ``policy.model`` (in place) and return it as a ``LoraPolicy``.

    ``base``: how to load the base again (``{"policy", "model", "policy_options"}``, the training config's);
    ``seed`` fixes the A matrices' random init (B starts at 0, so the adapted policy starts as the base).
    """
    import torch
    from peft import get_peft_model

    scope = _scope(policy)
    names = target_names(policy.model, scope, settings.target_modules, f"policy {policy.name!r}")
    fingerprint = base_fingerprint(policy.model, names)
    with torch.random.fork_rng(devices=[]), _quiet_peft():
        torch.manual_seed(seed)
        peft_model = get_peft_model(policy.model, _peft_config(settings, scope))
    # a local folder (peft looks a non-local name up on the Hub when saving): the loaded base's own
    peft_model.peft_config["default"].base_model_name_or_path = str(
        getattr(policy, "checkpoint", None) or base.get("model") or base.get("policy"))
    return LoraPolicy(policy, peft_model, settings, base, fingerprint)


class LoraPolicy:
    """A policy seen through its LoRA adapters; every attribute not defined here is the policy's own."""

    def __init__(self, policy: Any, peft_model: Any, settings: LoraSettings, base: dict[str, Any],
                 fingerprint: str, checkpoint: str | None = None) -> None:
        self.policy, self.peft, self.settings = policy, peft_model, settings
        self.base, self.fingerprint, self.checkpoint, self.merged = base, fingerprint, checkpoint, False
        grad_dropout = _grad_dropout_class()
        for m in policy.model.modules():  # peft's nn.Dropout -> dropout exactly where gradients are on
            for key, d in getattr(m, "lora_dropout", {}).items():
                if type(d).__name__ == "Dropout":
                    m.lora_dropout[key] = grad_dropout(d.p)

    def __getattr__(self, name: str) -> Any:
        if name == "policy":  # not yet set (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.policy, name)

    @property
    def model(self) -> Any:
        return self.policy.model

    def token_logits(self, rollout: Any, *, uncond: bool = False) -> Any:
        """The policy's teacher-forced statistics through the adapters (their dropout on when gradients are)."""
        return self.policy.token_logits(rollout, uncond=uncond)

    def reference(self) -> BaseReference:
        """The frozen base as GRPO's KL reference: the same weights, adapters off."""
        return BaseReference(self)

    def merge(self) -> LoraPolicy:
        """Fold ``scaling * B A`` into the base weights and drop the adapters (``merge_and_unload``)."""
        self.policy.model = self.peft.merge_and_unload()
        self.merged = True
        return self

    def trainable_parameters(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters() if p.requires_grad))

    def fsdp_units(self) -> list[Any]:
        raise LoraError("lora with parallel: fsdp is not supported: use parallel: ddp (the adapters are small)")

    def save(self, path: str | Path, state_dict: dict[str, Any] | None = None) -> Path:
        """PEFT's ``save_pretrained`` (adapters only) and ``irisbench_policy.json``."""
        if state_dict is not None or self.merged:
            raise LoraError("a merged or sharded LoRA policy has no adapters to save")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        # embeddings are never adapted: no "was the vocabulary resized?" check (a Hub look-up for non-local names)
        self.peft.save_pretrained(str(path), save_embedding_layers=False)
        meta = {"format": FORMAT, "format_version": 1, "policy": self.policy.name, "base": self.base,
                "base_fingerprint": self.fingerprint, "lora": asdict(self.settings),
                "lora_scope": _scope(self.policy)}
        (path / POLICY_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return path

    def describe(self) -> dict[str, Any]:
        d = dict(self.policy.describe())
        d["lora"] = {**asdict(self.settings), "target_modules": list(self.settings.target_modules),
                     "base": self.base, "base_fingerprint": self.fingerprint, "adapter": self.checkpoint,
                     "merged": self.merged}
        if not self.merged:
            d["trainable_parameters"] = self.trainable_parameters()
        if self.checkpoint:
            d["checkpoint"] = self.checkpoint
        return d


class BaseReference:
    """The base policy (adapters disabled) with the policy's ``token_logits`` signature, for the KL term."""

    def __init__(self, lora: LoraPolicy) -> None:
        self._lora = lora
        self.model = lora.model  # the same module: nothing is copied

    def token_logits(self, rollout: Any, *, uncond: bool = False) -> Any:
        with self._lora.peft.disable_adapter():
            return self._lora.policy.token_logits(rollout, uncond=uncond)


def load_lora(folder: str | Path, model: str | None = None, *, load_policy: Callable[..., Any],
              needs_model: Collection[str], device: str | None = None, trainable: bool = False,
              **kwargs: Any) -> LoraPolicy:
    """Base + adapters from a folder ``LoraPolicy.save`` wrote; ``model`` (``--model``) replaces the recorded
    base's model and must hold the same weights in the targeted layers; ``trainable=False`` merges them.

    ``load_policy`` and ``needs_model`` are ``irisbench.policies``' loader and its set of policies that take a
    model (passed in, so that this module does not import its package back). ``kwargs`` go to the base
    policy's loader (sampling settings)."""
    from peft import PeftModel

    folder = Path(folder)
    missing = [f for f in (*ADAPTER_FILES, POLICY_FILE) if not (folder / f).is_file()]
    if missing:
        raise LoraError(f"LoRA adapter folder {folder} lacks {', '.join(missing)}")
    meta = read_json(folder / POLICY_FILE, LoraError, "LoRA policy file")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise LoraError(f"{folder / POLICY_FILE}: field 'format' must be {FORMAT!r}")
    base = meta.get("base") or {}
    settings = LoraSettings.from_config(meta.get("lora", {}), f"{folder / POLICY_FILE}: lora")
    options = {**(base.get("policy_options") or {}), **kwargs}
    if model:
        policy = load_policy(base["policy"], model, device=device, **options) if base.get("policy") in needs_model \
            else load_policy(str(model), device=device, **options)
    else:
        policy = load_policy(base.get("policy", ""), base.get("model"), device=device, **options)
    scope = _scope(policy)
    names = target_names(policy.model, scope, settings.target_modules, f"base {model or base.get('model') or base}")
    fingerprint = base_fingerprint(policy.model, names)
    if fingerprint != meta.get("base_fingerprint"):
        recorded = base.get("model") or base.get("policy")
        raise LoraError(f"{folder}: the adapter was trained on base {recorded} (fingerprint "
                        f"{meta.get('base_fingerprint')}), but {model or recorded} holds other weights in the "
                        f"targeted layers (fingerprint {fingerprint}); pass the adapter's base with --model")
    try:
        with _quiet_peft():
            peft_model = PeftModel.from_pretrained(policy.model, str(folder), is_trainable=trainable,
                                                   local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise LoraError(f"{folder}: peft could not load the adapter onto the base ({str(e).splitlines()[0]})") \
            from None
    lora = LoraPolicy(policy, peft_model, settings, base, fingerprint, checkpoint=str(folder))
    return lora if trainable else lora.merge()


__all__ = ["DEFAULT_TARGETS", "FORMAT", "BaseReference", "LoraError", "LoraPolicy", "LoraSettings", "attach_lora",
           "base_fingerprint", "load_lora", "target_names", "target_regex"]
