"""The GRPO training configuration: one dataclass, YAML presets, ``key=value`` overrides, strict checks.

Field names follow trl's ``GRPOConfig`` where one exists (``num_generations``, ``beta``, ``epsilon``,
``num_iterations``, ``scale_rewards``, ``loss_type``, ``max_grad_norm``). Presets live in ``configs/``
(shipped inside the package); a preset may name another in ``base:`` and override some fields.
Unknown keys are refused by name, so a typo never silently trains the default.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from irisbench.sharding import PARALLEL_MODES


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and field."""


@dataclass
class TrainConfig:
    # what to train, on what
    policy: str = "shapes-base"  # a registered policy name or a checkpoint folder
    model: str | None = None  # model id/path for policies that need one (janus-pro)
    # options for the policy loader: shapes -> sampling defaults (e.g. max_plan_tokens: 1 = no plan);
    # janus-pro -> from_pretrained arguments (e.g. cot: false)
    policy_options: dict[str, Any] = field(default_factory=dict)
    suite: str = "geneval"
    split: str = "train"
    prompts_file: str | None = None  # an official-format metadata JSONL of training prompts (open world)
    # reward: one name or a list of names with matching weights (irisbench.rewards)
    reward: str | list[str] = "nsc"
    reward_weights: list[float] | None = None
    reward_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # GRPO (trl names and semantics)
    steps: int = 60
    prompts_per_step: int = 8
    num_generations: int = 8
    gradient_accumulation_steps: int = 1
    num_iterations: int = 1
    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.0
    loss_type: str = "bnpo"  # IRIS/T2I-R1: token mean over the micro-batch (trl names: grpo, bnpo, dr_grpo, dapo)
    scale_rewards: bool = True
    # where the policy-gradient log-probs come from: the conditional branch (IRIS, T2I-R1) or the
    # CFG-guided distribution that was sampled (AR-GRPO)
    logp_source: str = "conditional"
    # where the intrinsic reward's self-certainty comes from: the sampling loop's logits ("sampling",
    # free), the teacher-forced pass that also gives the log-probs ("teacher-forced"), or a second
    # forward pass as IRIS's code does ("second-pass")
    sc_source: str = "teacher-forced"
    # sampling during training (None: the policy's defaults)
    cfg: float | None = None
    temperature: float | None = None
    top_k: int | None = None
    # optimizer
    lr: float = 2e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    lr_scheduler: str = "constant"  # constant | linear | cosine
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    freeze: list[str] = field(default_factory=list)  # parameter-name substrings kept frozen
    # the image codes' output rows and embeddings kept fixed (policies that share one vocabulary: the shapes LM)
    freeze_image_tokens: bool = False
    # leave tokens a rule inserted (the plan cap's end of plan; Rollout.forced) out of the loss and the reward
    mask_forced_tokens: bool = False
    # bookkeeping
    seed: int = 0
    checkpoint_every: int = 20
    keep_last: int | None = None
    eval_every: int = 0  # 0: no in-training evaluation
    eval_split: str = "val"
    eval_prompts: int | None = None  # None: the whole split
    eval_images_per_prompt: int | None = None  # None: the suite's
    num_threads: int = 2
    # data parallelism under torchrun / accelerate launch: "ddp" replicates the policy and all-reduces
    # gradients; "fsdp" shards parameters, gradients and optimizer state (FSDP2, for 7B; irisbench.sharding)
    parallel: str = "ddp"

    def check(self) -> None:
        def positive(name: str) -> None:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")

        for name in ("steps", "prompts_per_step", "gradient_accumulation_steps", "num_iterations",
                     "checkpoint_every", "num_threads"):
            positive(name)
        if not isinstance(self.num_generations, int) or self.num_generations < 2:
            raise ConfigError(f"num_generations must be an integer >= 2 (GRPO compares samples within a group), "
                              f"got {self.num_generations!r}; valid: 2, 3, 4, ...")
        if self.prompts_per_step % self.gradient_accumulation_steps:
            divisors = [d for d in range(1, self.prompts_per_step + 1) if self.prompts_per_step % d == 0]
            raise ConfigError(f"gradient_accumulation_steps={self.gradient_accumulation_steps} must divide "
                              f"prompts_per_step={self.prompts_per_step} (groups are never split); valid: {divisors}")
        choices = {"loss_type": ("grpo", "bnpo", "dr_grpo", "dapo"), "logp_source": ("conditional", "guided"),
                   "sc_source": ("sampling", "teacher-forced", "second-pass"),
                   "lr_scheduler": ("constant", "linear", "cosine"), "parallel": PARALLEL_MODES}
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ConfigError(f"{name} must be one of {', '.join(valid)}, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.beta < 0 or self.epsilon <= 0:
            raise ConfigError(f"beta must be >= 0 and epsilon > 0, got beta={self.beta}, epsilon={self.epsilon}")
        if self.eval_every < 0 or self.warmup_steps < 0:
            raise ConfigError("eval_every and warmup_steps must be >= 0")
        if self.freeze_image_tokens and (self.weight_decay or self.parallel == "fsdp"):
            raise ConfigError("freeze_image_tokens zeroes the image rows' gradients, which keeps them fixed only "
                              "with weight_decay=0 and parallel=ddp")
        if self.cfg is not None and self.cfg < 0:
            raise ConfigError(f"cfg must be >= 0, got {self.cfg}")
        if self.temperature is not None and not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        names = [self.reward] if isinstance(self.reward, str) else list(self.reward)
        if self.reward_weights is not None and len(self.reward_weights) != len(names):
            raise ConfigError(f"reward_weights has {len(self.reward_weights)} entries but reward names "
                              f"{len(names)} ({names})")
        from irisbench.rewards import build_reward

        build_reward(self.reward, weights=self.reward_weights, options=self.reward_options or None)

    @property
    def rollouts_per_step(self) -> int:
        return self.prompts_per_step * self.num_generations

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FIELD_NAMES = tuple(f.name for f in fields(TrainConfig))
_FIELD_TYPES = {f.name: str(f.type) for f in fields(TrainConfig)}


def _coerce(name: str, value: Any, where: str) -> Any:
    """YAML reads ``1e-3`` as a string; numeric fields accept such strings, and nothing else odd."""
    kind = _FIELD_TYPES.get(name, "")
    if isinstance(value, str) and (kind.startswith("float") or kind.startswith("int")):
        try:
            return float(value) if kind.startswith("float") else int(value)
        except ValueError:
            raise ConfigError(f"{where}: field {name!r} must be a number, got {value!r}") from None
    if kind.startswith("float") and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def preset_names() -> list[str]:
    root = resources.files("irisbench") / "configs"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(name_or_path: str | Path) -> tuple[dict[str, Any], str]:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        text, where = path.read_text(encoding="utf-8"), str(path)
    else:
        names = preset_names()
        if str(name_or_path) not in names:
            close = difflib.get_close_matches(str(name_or_path), names, n=3)
            hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ConfigError(f"unknown config preset {str(name_or_path)!r}.{hint} Presets: {', '.join(names)}")
        text = (resources.files("irisbench") / "configs" / f"{name_or_path}.yaml").read_text(encoding="utf-8")
        where = f"configs/{name_or_path}.yaml"
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of config fields, got {type(raw).__name__}")
    return raw, where


def _check_keys(raw: dict[str, Any], where: str) -> None:
    unknown = [k for k in raw if k not in FIELD_NAMES and k not in ("base", "description")]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, FIELD_NAMES, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"{where}: unknown config key(s): {', '.join(hints)}")


def load_preset(name_or_path: str | Path, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields a preset sets (its ``base:`` chain resolved), without defaults filled in."""
    raw, where = _read_yaml(name_or_path)
    _check_keys(raw, where)
    base = raw.pop("base", None)
    raw.pop("description", None)
    if base is None:
        return raw
    if base in _seen:
        raise ConfigError(f"{where}: presets form a cycle through {base!r}")
    return {**load_preset(base, (*_seen, str(name_or_path))), **raw}


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` with the value parsed as YAML (so numbers, lists and null work)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, _, value = item.partition("=")
    key = key.strip()
    _check_keys({key: None}, "override")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from None


def resolve_config(preset: str | Path | None = "iris-shapes",
                   overrides: list[str] | dict[str, Any] = ()) -> TrainConfig:
    """Defaults <- preset (and its bases) <- overrides; checked."""
    values: dict[str, Any] = load_preset(preset) if preset else {}
    if isinstance(overrides, dict):
        _check_keys(overrides, "overrides")
        values.update(overrides)
    else:
        values.update(dict(parse_override(o) for o in overrides))
    values = {k: _coerce(k, v, "config") for k, v in values.items()}
    try:
        cfg = TrainConfig(**values)
    except TypeError as e:
        raise ConfigError(f"bad config: {e}") from None
    cfg.check()
    return cfg


def config_from_dict(d: dict[str, Any], where: str) -> TrainConfig:
    _check_keys(d, where)
    return TrainConfig(**d)
