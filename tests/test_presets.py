"""Every training preset in ``irisbench/configs/`` trains one GRPO step on a CPU, with tiny overrides: the shapes
presets on a tiny random shapes LM, the Janus presets on the tiny random Janus (``janus_tiny.py``). A preset
that resolves but cannot train (a reward whose inputs the trainer does not provide, a missing vocabulary size)
fails here."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from irisbench.train_config import ConfigError, load_preset, preset_names, resolve_config
from irisbench.trainer import GRPOTrainer, read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module

TINY = ["steps=1", "prompts_per_step=2", "num_generations=2", "eval_every=0", "checkpoint_every=1", "num_threads=1"]


@pytest.fixture(scope="module")
def tiny_janus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from janus_tiny import build_tiny_janus

    root = tmp_path_factory.mktemp("janus")
    prompts = root / "prompts.txt"
    prompts.write_text("a red apple on a table\ntwo cats\nthree blue cups\n")
    return build_tiny_janus(root / "janus"), prompts


@pytest.fixture(scope="module")
def tiny_clip_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    from clip_tiny import register_tiny_clip

    return register_tiny_clip(tmp_path_factory.mktemp("clip"))


def _overrides(name: str, shapes: Path, janus: tuple[Path, Path], clip: str) -> list[str]:
    preset = load_preset(name)
    if preset.get("policy", "shapes-base") == "janus-pro":
        folder, prompts = janus
        extra = [f"model={folder}", f"prompts_file={prompts}", "cfg=2.0"]
        if preset.get("parallel") == "fsdp":  # one-process FSDP of the tiny Janus: tests/test_sharding.py
            extra.append("parallel=ddp")
        if preset.get("reward") == "clip":  # real images need a real CLIP; here a tiny random open_clip model
            extra.append(f"reward_options={{clip: {{model: {clip}}}}}")
        return [*TINY, *extra]
    return [*TINY, f"policy={shapes}"]


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_trains_one_step(name: str, tiny_policy_dir: Path, tiny_janus: tuple[Path, Path],
                                      tiny_clip_name: str, tmp_path: Path) -> None:
    cfg = resolve_config(name, _overrides(name, tiny_policy_dir, tiny_janus, tiny_clip_name))
    run = tmp_path / "run"
    trainer = GRPOTrainer(cfg, run, progress=False)
    trainer.train()
    (row,) = read_metrics(run)
    assert row["step"] == 1 and math.isfinite(row["loss"]) and math.isfinite(row["reward_mean"])
    names = [cfg.reward] if isinstance(cfg.reward, str) else cfg.reward
    assert all(math.isfinite(row[f"reward/{n}"]) for n in names)
    assert (run / "checkpoints" / "step-1" / "trainer_state.json").is_file()
    assert (trainer.ref is not None) == (cfg.beta > 0)


def test_the_clip_reward_reads_the_shapes_clip(tiny_policy_dir: Path, tmp_path: Path) -> None:
    """clip-shapes scores each image against its prompt with the shipped shapes CLIP (the numbers the reward
    logs are that CLIP's scores of the step's images)."""
    import numpy as np

    from irisbench.metrics.clip_score import clip_score, load_clip

    trainer = GRPOTrainer(resolve_config("clip-shapes", [*TINY, f"policy={tiny_policy_dir}"]), tmp_path / "run",
                          progress=False)
    trainer._setup()
    batch = trainer._generate(0)
    r = batch.rollout
    want = clip_score(r.images, r.prompts, load_clip("shapes-clip"))
    got, terms = trainer.reward.evaluate(r, {**trainer.context, "metadata": batch.metas})
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.ptp(want) > 0  # different images, different scores


def test_clip_on_an_open_world_policy_needs_a_real_clip(tiny_janus: tuple[Path, Path], tmp_path: Path) -> None:
    folder, prompts = tiny_janus
    cfg = resolve_config("janus-pro-1b-t2i-r1", [*TINY, f"model={folder}", f"prompts_file={prompts}"])
    with pytest.raises(ConfigError, match="open-world policy needs a CLIP for real images"):
        GRPOTrainer(cfg, tmp_path / "run", progress=False).train()
