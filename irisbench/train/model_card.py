"""Model cards: a Hugging Face ``README.md`` in every saved checkpoint folder.

``write_model_card(folder)`` reads what the folder and its run hold (``trainer_state.json``: config and step;
``irisbench_policy.json``: the policy's format; the run's ``env.json``, ``train/metrics.jsonl`` and
in-training evaluations ``eval/<split>/step-M/results.json``) and writes a card that ``huggingface-cli
upload`` publishes as a complete model page:

- front matter (``huggingface_hub.ModelCardData``): ``base_model`` (a Hub id: the config's ``model``, or the
  ``base_model`` of the card of the local folder a run started from; left out when the base is a local
  folder with no known Hub id, as the shapes world's policies), ``library_name`` (``transformers`` for a
  Janus ``save_pretrained`` folder, ``irisbench`` for a shapes LM), ``license`` (the base model's card's,
  read from a local folder or the local Hugging Face cache only, else ``other`` for Janus and the
  project's ``apache-2.0`` for the shapes world), ``pipeline_tag: text-to-image``, ``tags`` (algorithm,
  rewards), and a ``model-index`` entry for the newest in-training evaluation;
- the recipe (preset as given on the command line, key hyperparameters), reward, steps, seeds, the reward
  logged at the checkpoint's step, every in-training evaluation up to the checkpoint's step with its
  bootstrap interval, and provenance (irisbench version, git commit, CPU and device).

Test-split scores are never part of a training run (the test split is scored once, outside it): the card
says how to get them. A checkpoint's own evaluation runs after it is saved; the trainer rewrites its card
then. Nothing here touches the network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from irisbench.core.records import atomic_write_text
from irisbench.evaluation.eval_run import CONFIG_FILE, RESULTS

CARD = "README.md"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# the recipe's fields a reader looks for first, in this order (present ones only); the full config is
# in trainer_state.json and the run's config.yaml
JANUS_USE = "; it is also a transformers `save_pretrained` folder (`JanusForConditionalGeneration`)"
KEY_FIELDS = ("policy", "model", "suite", "split", "prompts_file", "reward", "reward_weights", "reward_options",
              "steps", "prompts_per_step", "num_generations", "gradient_accumulation_steps", "num_iterations",
              "lr", "lr_scheduler", "warmup_steps", "weight_decay", "max_grad_norm", "beta", "epsilon",
              "epsilon_high", "loss_type", "importance_sampling_level", "drop_zero_spread_groups", "scale_rewards",
              "logp_source", "sc_source", "cfg", "temperature", "top_k", "freeze", "lora", "parallel", "seed",
              "batch_size", "hidden_size", "num_layers", "precision")


def front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a card's text ({} when there is none)."""
    m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    data = yaml.safe_load(m.group(1)) if m else None
    return data if isinstance(data, dict) else {}


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _base_card(source: str | None) -> tuple[str | None, dict[str, Any]]:
    """(Hub id, the base model's card front matter) for a config's ``model``/``policy`` value."""
    if not source:
        return None, {}
    path = Path(source)
    if path.is_dir():
        card = path / CARD
        meta = front_matter(card.read_text(encoding="utf-8")) if card.is_file() else {}
        base = meta.get("base_model")
        return (base if isinstance(base, str) else None), meta
    if not HUB_ID.match(source):
        return None, {}
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source, CARD)  # the local cache only: never a download
    meta = front_matter(Path(cached).read_text(encoding="utf-8")) if isinstance(cached, str) else {}
    return source, meta


def _evaluations(run: Path, step: int) -> list[dict[str, Any]]:
    """The run's finished in-training evaluations of steps <= ``step``, oldest first."""
    rows = []
    for res_path in sorted((run / "eval").glob(f"*/step-*/{RESULTS}")):
        m = re.fullmatch(r"step-(\d+)", res_path.parent.name)
        res = _read(res_path)
        if not m or int(m.group(1)) > step or not isinstance(res, dict):
            continue
        overall = (res.get("scores") or {}).get("overall") or {}
        ci = (res.get("scores") or {}).get("ci") or {}
        rows.append({"step": int(m.group(1)), "split": res.get("split"), "suite": res.get("suite"),
                     "world": res.get("world"), "score": overall.get("score"), "ci_low": overall.get("ci_low"),
                     "ci_high": overall.get("ci_high"), "confidence": ci.get("confidence"),
                     "n_prompts": overall.get("n_prompts"), "n_images": overall.get("n_images"),
                     "seed": res.get("seed"), "folder": str(res_path.parent.relative_to(run))})
    return sorted(rows, key=lambda r: (r["step"], str(r["split"])))


def _logged(run: Path, step: int) -> dict[str, Any]:
    """The metrics.jsonl line of ``step`` ({} if none)."""
    path = run / "train" / "metrics.jsonl"
    if not path.is_file():
        return {}
    found: dict[str, Any] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("step") == step:
            found = rec
    return found


def _preset(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a in ("--config", "-c") and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return "iris-shapes" if len(argv) > 1 and argv[1] == "train" else None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "`" + json.dumps(v) + "`" if isinstance(v, (dict, list)) else str(v)


def _score(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _interval(r: dict[str, Any]) -> str:
    if r["ci_low"] is None or r["ci_high"] is None:
        return "n/a"
    conf = f"{100 * r['confidence']:.0f}% " if isinstance(r.get("confidence"), (int, float)) else ""
    return f"{conf}[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"


def build_card(folder: str | Path, run: str | Path | None = None) -> str:
    """The card's text for a complete checkpoint folder (``trainer_state.json`` written); ``run``: the run
    folder (default: two levels up, ``<run>/checkpoints/step-N``)."""
    from huggingface_hub import EvalResult, ModelCardData

    folder = Path(folder)
    run = Path(run) if run is not None else folder.parent.parent
    state = _read(folder / "trainer_state.json") or {}
    cfg: dict[str, Any] = state.get("config") or {}
    step = int(state.get("step", 0))
    meta = _read(folder / "irisbench_policy.json") or {}
    env = _read(run / "env.json") or {}
    grpo = "grpo" in str(state.get("format", ""))
    janus = str(meta.get("format", "")).startswith("transformers")
    base, base_meta = _base_card(cfg.get("model") or cfg.get("policy")) if grpo else (None, {})
    rewards = [cfg["reward"]] if isinstance(cfg.get("reward"), str) else list(cfg.get("reward") or [])
    algo = ("gspo" if cfg.get("importance_sampling_level") == "sequence" else "grpo") if grpo else "pretraining"
    name = f"{run.resolve().name}-{folder.name if folder.name.startswith('step-') else f'step-{step}'}"
    evals = _evaluations(run, step)
    latest = evals[-1] if evals and evals[-1]["score"] is not None else None
    data = ModelCardData(
        base_model=base, library_name="transformers" if janus else "irisbench",
        license=base_meta.get("license") or ("other" if janus else "apache-2.0"),
        license_name=base_meta.get("license_name"), license_link=base_meta.get("license_link"),
        pipeline_tag="text-to-image",
        tags=["irisbench", "text-to-image", "autoregressive", algo, *(f"reward-{r}" for r in rewards),
              *(["janus-pro"] if janus else ["shapes-world"])],
        model_name=name,
        eval_results=[EvalResult(task_type="text-to-image", dataset_type=f"irisbench/{latest['suite']}",
                                 dataset_name=f"{latest['suite']} ({latest['world']}) {latest['split']}",
                                 dataset_split=latest["split"], metric_type="mean_of_tag_means",
                                 metric_name=f"overall (step {latest['step']})", metric_value=latest["score"])]
        if latest else None,
    )
    git = env.get("git") or {}
    dev = env.get("device") if isinstance(env.get("device"), str) else None
    logged = _logged(run, step)
    lines = [f"---\n{data.to_yaml()}\n---", "", f"# {name}", ""]
    what = ("GSPO (sequence-level ratios) " if algo == "gspo" else "GRPO ") + "fine-tune of " if grpo else \
        "A shapes-world language model pretrained "
    base_line = base or cfg.get("model") or cfg.get("policy") or "a new random model"
    version = env.get("irisbench_version") or ""
    lines += [f"{what}{'`' + base_line + '`' if grpo else 'from scratch'}, step {step} of "
              f"{cfg.get('steps', '?')}, trained with irisbench {version}".rstrip() + ".", ""]
    if grpo and not base:
        lines += [f"The base policy `{base_line}` (an irisbench policy or a local folder) has no known Hugging Face "
                  "Hub id.", ""]
    lines += ["## Training", "", f"- preset: `{_preset(list(env.get('argv') or [])) or 'not recorded'}`"]
    if grpo:
        weights = cfg.get("reward_weights")
        lines.append(f"- reward: {' + '.join(rewards)}" + (f" (weights {weights})" if weights else ""))
    lines += [f"- steps: {step} (of {cfg.get('steps', '?')} planned)", f"- seed: {cfg.get('seed', '?')}"]
    if "reward_mean" in logged:
        lines.append(f"- reward at step {step}: mean {_fmt(logged['reward_mean'])}, std "
                     f"{_fmt(logged.get('reward_std'))}; KL {_fmt(logged.get('kl'))}")
    lines += ["", "| hyperparameter | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(cfg[k])} |" for k in KEY_FIELDS if k in cfg and cfg[k] not in (None, [], {})]
    lines += ["", f"The full config is `trainer_state.json`'s `config` (and the run's `{CONFIG_FILE}`).", ""]
    lines += ["## Evaluation", ""]
    if evals:
        lines += ["In-training evaluations (bootstrap intervals over prompts):", "",
                  "| step | suite | split | score | interval | prompts | images | seed |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['step']} | {r['suite']} ({r['world']}) | {r['split']} | {_score(r['score'])} | "
                  f"{_interval(r)} | {r['n_prompts']} | {r['n_images']} | {r['seed']} |" for r in evals]
    else:
        lines.append("No in-training evaluation up to this step.")
    lines += ["", "Test-split scores are not part of training: `irisbench eval --policy <this folder> --split test`.",
              "", "## Provenance", "",
              f"- irisbench {env.get('irisbench_version') or 'unknown version'}, git commit "
              f"{git.get('commit') or 'unknown'}" + (" (uncommitted changes)" if git.get("dirty") else ""),
              f"- CPU: {env.get('cpu_model') or 'unknown'}; device: {dev or 'unknown'}"
              + (f" ({env['gpu']})" if env.get("gpu") else ""),
              f"- created {env.get('time', 'unknown')}; command: `{' '.join(env.get('argv') or []) or 'unknown'}`",
              "", "## Use", "",
              f"`irisbench eval --policy <this folder>` loads it{JANUS_USE if janus else ''}.", ""]
    return "\n".join(lines)


def write_model_card(folder: str | Path, run: str | Path | None = None) -> Path:
    """Write (atomically) ``folder/README.md``; returns its path."""
    path = Path(folder) / CARD
    atomic_write_text(path, build_card(folder, run))
    return path


def refresh_model_card(run: str | Path, step: int) -> Path | None:
    """Rewrite the card of ``<run>/checkpoints/step-{step}`` if that checkpoint is complete (after its
    in-training evaluation, which runs once the checkpoint is saved)."""
    folder = Path(run) / "checkpoints" / f"step-{step}"
    return write_model_card(folder, run) if (folder / "trainer_state.json").is_file() else None
