"""Model cards: every checkpoint folder's README.md has Hugging Face front matter and the run's recipe,
reward, steps, seeds, in-training evaluations with intervals and provenance, matching the run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from irisbench.train.config import resolve_config
from irisbench.train.model_card import _base_card, front_matter
from irisbench.train.trainer import GRPOTrainer, eval_folder, read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


def _card(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1]), text


def test_checkpoint_cards_match_the_run(tiny_policy_dir: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    shutil.copytree(tiny_policy_dir, base)
    (base / "README.md").write_text("---\nbase_model: someone/shapes-base\nlicense: mit\n---\n# base\n")
    args = [f"policy={base}", "steps=2", "prompts_per_step=2", "num_generations=2", "eval_every=2", "eval_prompts=4",
            "eval_images_per_prompt=1", "checkpoint_every=1", "lr=1e-3", "num_threads=1", "seed=7",
            "importance_sampling_level=sequence", "reward=[nsc, verifier]", "reward_weights=[1.0, 0.5]"]
    run = tmp_path / "run"
    GRPOTrainer(resolve_config("iris-shapes", args), run, progress=False).train()
    env = json.loads((run / "env.json").read_text())
    rows = {r["step"]: r for r in read_metrics(run)}
    results = json.loads((eval_folder(run, "val", 2) / "results.json").read_text())
    overall = results["scores"]["overall"]
    for step in (1, 2):
        meta, text = _card(run / "checkpoints" / f"step-{step}")
        assert meta["base_model"] == "someone/shapes-base" and meta["license"] == "mit"  # from the base's card
        assert meta["library_name"] == "irisbench" and meta["pipeline_tag"] == "text-to-image"
        assert {"irisbench", "gspo", "reward-nsc", "reward-verifier"} <= set(meta["tags"])
        assert f"- steps: {step} (of 2 planned)" in text and "- seed: 7" in text
        assert "- reward: nsc + verifier (weights [1.0, 0.5])" in text
        assert f"- reward at step {step}: mean {rows[step]['reward_mean']:.4g}" in text
        assert "| importance_sampling_level | sequence |" in text and "| num_generations | 2 |" in text
        assert f"git commit {env['git']['commit'] or 'unknown'}" in text and env["cpu_model"] in text
        assert ModelCard(text).data.base_model == "someone/shapes-base"  # huggingface_hub reads it back
    meta1, text1 = _card(run / "checkpoints" / "step-1")
    assert "model-index" not in meta1 and "No in-training evaluation up to this step." in text1
    meta2, text2 = _card(run / "checkpoints" / "step-2")  # rewritten after step 2's evaluation
    (result,) = meta2["model-index"][0]["results"]
    assert result["metrics"][0]["value"] == pytest.approx(overall["score"])
    assert result["dataset"]["split"] == "val"
    assert (f"| 2 | geneval (shapes) | val | {overall['score']:.4f} | 95% [{overall['ci_low']:.3f}, "
            f"{overall['ci_high']:.3f}] | {overall['n_prompts']} | {overall['n_images']} | 7 |") in text2


def test_base_model_resolution(tmp_path: Path) -> None:
    assert _base_card("deepseek-ai/Janus-Pro-1B")[0] == "deepseek-ai/Janus-Pro-1B"  # a Hub id, the cache only
    assert _base_card("shapes-base") == (None, {})  # a registered policy name, not a Hub id
    plain = tmp_path / "plain"
    plain.mkdir()
    assert _base_card(str(plain)) == (None, {})
    assert front_matter("no card") == {} and front_matter("---\na: 1\n---\nbody") == {"a": 1}
