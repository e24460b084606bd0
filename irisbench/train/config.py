"""The GRPO training configuration: one dataclass, YAML presets, ``key=value`` overrides, strict checks.

Field names follow trl's ``GRPOConfig`` where one exists (``num_generations``, ``beta``, ``epsilon``,
``num_iterations``, ``scale_rewards``, ``loss_type``, ``max_grad_norm``). Presets live in ``configs/``
(shipped inside the package); a preset may name another in ``base:`` and override some fields.
Unknown keys are refused by name, so a typo never silently trains the default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from irisbench.core.errors import ConfigError, UsageError, did_you_mean, parse_key_value
from irisbench.core.specs import read_spec, spec_names
from irisbench.train.rewards import GROUP_REWARDS, build_reward
from irisbench.train.sharding import PARALLEL_MODES
from irisbench.train.tracking import report_to_names

# TrainConfig fields that say how a run executes, not what it trains: a run resumes with them changed (the change is
# logged in resumes.jsonl; floating-point sums at another thread count may differ in the last bits from there on),
# and a finished run is finished whatever they were
EXECUTION_FIELDS = frozenset({"num_threads"})


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
    # reward: one name or a list of names with matching weights (irisbench.train.rewards)
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
    # importance ratios per token (GRPO) or per sequence (GSPO; trl's importance_sampling_level)
    importance_sampling_level: str = "token"
    # DAPO's dynamic sampling: groups whose rewards are all equal leave the loss and its normalisers
    drop_zero_spread_groups: bool = False
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
    # LoRA adapters (irisbench.policies.lora; {} for the defaults: r 16, alpha 32, dropout 0.05, the attention and
    # MLP projections); None: full fine-tuning
    lora: dict[str, Any] | None = None
    # loud failures: stop when every group's rewards are all equal (zero spread: no advantage, no policy
    # gradient) for this many consecutive steps (0: never)
    zero_spread_steps: int = 3
    # data parallelism under torchrun / accelerate launch: "ddp" replicates the policy and all-reduces
    # gradients; "fsdp" shards parameters, gradients and optimizer state (FSDP2, for 7B; irisbench.train.sharding)
    parallel: str = "ddp"
    # experiment tracking, trl's names: none | tensorboard | wandb | trackio | mlflow | all, or a list
    # (irisbench.train.tracking; offline by default)
    report_to: str | list[str] = "none"

    def check(self) -> None:
        def positive(name: str) -> None:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")

        for name in ("steps", "prompts_per_step", "gradient_accumulation_steps", "num_iterations",
                     "checkpoint_every", "num_threads"):
            positive(name)
        names = [self.reward] if isinstance(self.reward, str) else list(self.reward)
        shuffled = [n for n in names if n in GROUP_REWARDS]
        if shuffled and self.num_generations == 1:
            raise ConfigError(f"reward {shuffled[0]!r} permutes the rewards within each GRPO group and needs "
                              "num_generations >= 2, got 1; set num_generations: 2 or more")
        if not isinstance(self.num_generations, int) or self.num_generations < 2:
            raise ConfigError(f"num_generations must be an integer >= 2 (GRPO compares samples within a group), "
                              f"got {self.num_generations!r}; valid: 2, 3, 4, ...")
        if self.prompts_per_step % self.gradient_accumulation_steps:
            divisors = [d for d in range(1, self.prompts_per_step + 1) if self.prompts_per_step % d == 0]
            raise ConfigError(f"gradient_accumulation_steps={self.gradient_accumulation_steps} must divide "
                              f"prompts_per_step={self.prompts_per_step} (groups are never split); valid: {divisors}")
        choices = {"loss_type": ("grpo", "bnpo", "dr_grpo", "dapo"), "logp_source": ("conditional", "guided"),
                   "sc_source": ("sampling", "teacher-forced", "second-pass"),
                   "lr_scheduler": ("constant", "linear", "cosine"), "parallel": PARALLEL_MODES,
                   "importance_sampling_level": ("token", "sequence")}
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ConfigError(f"{name} must be one of {', '.join(valid)}, got {getattr(self, name)!r}")
        if not isinstance(self.drop_zero_spread_groups, bool):
            raise ConfigError(f"drop_zero_spread_groups must be true or false, got {self.drop_zero_spread_groups!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.beta < 0 or self.epsilon <= 0:
            raise ConfigError(f"beta must be >= 0 and epsilon > 0, got beta={self.beta}, epsilon={self.epsilon}")
        if self.eval_every < 0 or self.warmup_steps < 0:
            raise ConfigError("eval_every and warmup_steps must be >= 0")
        if not isinstance(self.zero_spread_steps, int) or isinstance(self.zero_spread_steps, bool) \
                or self.zero_spread_steps < 0:
            raise ConfigError(f"zero_spread_steps must be an integer >= 0 (0: never stop), "
                              f"got {self.zero_spread_steps!r}")
        if self.freeze_image_tokens and (self.weight_decay or self.parallel == "fsdp"):
            raise ConfigError("freeze_image_tokens zeroes the image rows' gradients, which keeps them fixed only "
                              "with weight_decay=0 and parallel=ddp")
        if self.lora is not None:
            from irisbench.policies.lora import LoraSettings

            LoraSettings.from_config(self.lora)
            if self.parallel == "fsdp" or self.freeze_image_tokens:
                raise ConfigError("lora trains only the adapters (embeddings and heads stay frozen) and is not "
                                  "sharded: set parallel=ddp and freeze_image_tokens=false, or drop lora")
        if self.cfg is not None and self.cfg < 0:
            raise ConfigError(f"cfg must be >= 0, got {self.cfg}")
        if self.temperature is not None and not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.reward_weights is not None and len(self.reward_weights) != len(names):
            raise ConfigError(f"reward_weights has {len(self.reward_weights)} entries but reward names "
                              f"{len(names)} ({names})")
        report_to_names(self.report_to, installed=False)
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


def _presets_folder() -> Any:
    return resources.files("irisbench") / "configs"


def preset_names() -> list[str]:
    return spec_names(_presets_folder())


def _read_yaml(name_or_path: str | Path) -> tuple[dict[str, Any], str]:
    raw, where = read_spec(name_or_path, _presets_folder(), "config preset", ConfigError, "configs/")
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of config fields, got {type(raw).__name__}")
    return raw, where


def _check_keys(raw: dict[str, Any], where: str) -> None:
    unknown = [k for k in raw if k not in FIELD_NAMES and k not in ("base", "description")]
    if unknown:
        hints = []
        for k in unknown:
            hints.append(f"{k!r}" + (f" ({hint.strip()})" if (hint := did_you_mean(k, FIELD_NAMES, n=1)) else ""))
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
    """``key=value`` with the value parsed as YAML (so numbers, lists and null work).

    ``key`` may be dotted (``policy_options.max_plan_tokens=1``): its first part must be a config field
    holding a mapping; ``apply_override`` sets the nested entry and keeps the mapping's other entries.
    """
    try:
        key, value = parse_key_value(item, "override", numbers=False)
    except UsageError as e:
        raise ConfigError(str(e)) from None
    _check_keys({key.split(".", 1)[0]: None}, "override")
    return key, value


def apply_override(values: dict[str, Any], key: str, value: Any, where: str = "override") -> None:
    """Set ``values[key] = value``; a dotted key sets an entry inside a mapping field (copied, not shared)."""
    head, *path = key.split(".")
    if not path:
        values[head] = value
        return
    if any(not part for part in path):
        raise ConfigError(f"{where} {key!r}: empty part in a dotted key")
    node = values.get(head)
    if node is None:
        node = {}
    if not isinstance(node, dict):
        raise ConfigError(f"{where} {key!r}: field {head!r} holds {type(node).__name__}, not a mapping; "
                          f"dotted keys only reach into mapping fields")
    root = node = dict(node)
    for part in path[:-1]:
        child = node.get(part)
        if child is not None and not isinstance(child, dict):
            raise ConfigError(f"{where} {key!r}: {part!r} holds {type(child).__name__}, not a mapping")
        node[part] = node = dict(child or {})
    node[path[-1]] = value
    values[head] = root


def resolve_config(preset: str | Path | None = "iris-shapes",
                   overrides: list[str] | dict[str, Any] = ()) -> TrainConfig:
    """Defaults <- preset (and its bases) <- overrides; checked."""
    values: dict[str, Any] = load_preset(preset) if preset else {}
    if isinstance(overrides, dict):
        _check_keys(overrides, "overrides")
        values.update(overrides)
    else:
        for o in overrides:
            apply_override(values, *parse_override(o))
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
