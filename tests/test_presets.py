"""Every training preset in ``irisbench/configs/`` trains one GRPO step on a CPU, with tiny overrides: the shapes
presets on a tiny random shapes LM, the Janus-Pro presets on the tiny random Janus (``janus_tiny.py``), the
``janus-shapes-*`` presets on the shipped tiny shapes-world Janus. A preset
that resolves but cannot train (a reward whose inputs the trainer does not provide, a missing vocabulary size)
fails here."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from irisbench.train.config import load_preset, preset_names, resolve_config
from irisbench.train.trainer import GRPOTrainer, read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module

TINY = ["steps=1", "prompts_per_step=2", "num_generations=2", "eval_every=0", "checkpoint_every=1", "num_threads=1"]


@pytest.fixture(scope="module")
def tiny_clip_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    from clip_tiny import register_tiny_clip

    return register_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def tiny_hps(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    from preference_tiny import build_tiny_hps

    name, _, weights = build_tiny_hps(tmp_path_factory.mktemp("hps"))
    return name, weights


def _overrides(name: str, shapes: Path, janus: tuple[Path, Path], clip: str,
               hps: tuple[str, Path] | None = None) -> list[str]:
    preset = load_preset(name)
    if preset.get("policy", "shapes-base") == "janus-pro":
        folder, prompts = janus
        extra = [f"model={folder}", f"prompts_file={prompts}", "cfg=2.0"]
        if preset.get("parallel") == "fsdp":  # one-process FSDP of the tiny Janus: tests/test_sharding.py
            extra.append("parallel=ddp")
        if preset.get("reward") == "clip":  # real images need a real CLIP; here a tiny random open_clip model
            extra.append(f"reward_options={{clip: {{model: {clip}}}}}")
        if preset.get("reward") == "hpsv2" and hps is not None:  # a tiny random open_clip model's weights
            extra += [f"reward_options.hpsv2.model={hps[1]}", f"reward_options.hpsv2.backbone={hps[0]}"]
        return [*TINY, *extra]
    if preset.get("policy") == "janus-shapes":  # the shipped tiny Janus is small enough to train as it is
        return TINY
    if preset.get("gradient_accumulation_steps", 1) > 1:  # one group per micro-batch, as the preset has
        return [*TINY, "gradient_accumulation_steps=2", f"policy={shapes}"]
    return [*TINY, f"policy={shapes}"]


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_trains_one_step(name: str, tiny_policy_dir: Path, tiny_janus: tuple[Path, Path],
                                      tiny_clip_name: str, tiny_hps: tuple[str, Path], tmp_path: Path) -> None:
    cfg = resolve_config(name, _overrides(name, tiny_policy_dir, tiny_janus, tiny_clip_name, tiny_hps))
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
    cfg = resolve_config("janus-pro-1b-t2i-r1", [*TINY, f"model={folder}", f"prompts_file={prompts}", "reward=clip"])
    from irisbench.train.rewards import RewardError

    with pytest.raises(RewardError, match="open-world policy needs a CLIP for real images"):
        GRPOTrainer(cfg, tmp_path / "run", progress=False).train()


def test_the_t2i_r1_preset_rewards_hps_from_local_weights_only(tiny_janus: tuple[Path, Path],
                                                               tiny_hps: tuple[str, Path], tmp_path: Path) -> None:
    """janus-pro-1b-t2i-r1 is T2I-R1's HPS term: the logged reward is HPS v2.1's cosine of the step's images; without
    weights on this machine it stops with one line before training."""
    import numpy as np

    from irisbench.metrics.preference import PreferenceModelError, load_hpsv2

    folder, prompts = tiny_janus
    base = [*TINY, f"model={folder}", f"prompts_file={prompts}", "cfg=2.0"]
    assert resolve_config("janus-pro-1b-t2i-r1", base).reward == "hpsv2"
    with pytest.raises(PreferenceModelError, match="allow_pickle|no weights given|does not exist"):
        GRPOTrainer(resolve_config("janus-pro-1b-t2i-r1", [*base, "reward_options.hpsv2.model=/no/HPS_v2.1.pt"]),
                    tmp_path / "bad", progress=False).train()
    trainer = GRPOTrainer(resolve_config("janus-pro-1b-t2i-r1", [*base, f"reward_options.hpsv2.model={tiny_hps[1]}",
                                                                 f"reward_options.hpsv2.backbone={tiny_hps[0]}"]),
                          tmp_path / "run", progress=False)
    trainer._setup()
    batch = trainer._generate(0)
    r = batch.rollout
    got, terms = trainer.reward.evaluate(r, {**trainer.context, "metadata": batch.metas})
    want = load_hpsv2(str(tiny_hps[1]), tiny_hps[0]).score(r.images, r.prompts)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.all(np.abs(want) <= 1)


def test_the_faithful_preset_freezes_image_rows_and_masks_the_forced_end_of_plan(tiny_policy_dir: Path,
                                                                                 tmp_path: Path) -> None:
    """iris-shapes-faithful: the image codes' rows of lm_head and of the embeddings do not move while the plan
    rows do; the plan cap's EOP (Rollout.forced) is left out of the loss: a non-finite log-prob there changes
    nothing, and the same poison stops the as-coded preset."""
    import numpy as np
    import torch

    from irisbench.policies import load_policy
    from irisbench.train.trainer import TrainingDivergedError

    cfg = resolve_config("iris-shapes-faithful", [*TINY, "steps=2", "lr=1e-2", f"policy={tiny_policy_dir}",
                                                   "policy_options={max_plan_tokens: 3}"])
    assert cfg.beta == 0.01 and cfg.lr_scheduler == "linear" and cfg.freeze_image_tokens and cfg.mask_forced_tokens

    def poisoned() -> object:
        policy = load_policy(str(tiny_policy_dir), max_plan_tokens=3)
        real = policy.token_logits

        def token_logits(rollout, **kw):
            out = real(rollout, **kw)
            assert rollout.forced is not None and rollout.forced.any()  # a 3-token cap cuts most plans
            forced = torch.as_tensor(rollout.forced, device=out.logp.device)
            out.logp = torch.where(forced, torch.full_like(out.logp, float("inf")), out.logp)
            return out

        policy.token_logits = token_logits
        return policy

    trainer = GRPOTrainer(cfg, tmp_path / "faithful", progress=False, policy=poisoned())
    trainer.train()
    assert all(math.isfinite(r["loss"]) for r in read_metrics(tmp_path / "faithful"))
    start, v = load_policy(str(tiny_policy_dir)), trainer.policy.vocab
    image = slice(v.image_offset, v.image_offset + v.codebook_size)
    for name in ("lm_head", "model.embed_tokens"):
        before = start.model.get_submodule(name).weight.detach().numpy()
        after = trainer.policy.model.get_submodule(name).weight.detach().numpy()
        assert np.array_equal(before[image], after[image]), name
        assert not np.array_equal(before[v.text_ids], after[v.text_ids]), name
    as_coded = resolve_config("iris-shapes", [*TINY, f"policy={tiny_policy_dir}",
                                              "policy_options={max_plan_tokens: 3}"])
    with pytest.raises(TrainingDivergedError, match="non-finite log-probs"):
        GRPOTrainer(as_coded, tmp_path / "as-coded", progress=False, policy=poisoned()).train()


def test_forced_tokens_are_left_out_of_the_reward(tiny_policy_dir: Path, tmp_path: Path) -> None:
    """With mask_forced_tokens the reward reads every token but the forced EOP: a self-certainty of 1000 recorded
    there (sc_source=sampling, reward sc = mean self-certainty) does not reach the reward."""
    import numpy as np

    from irisbench.policies import load_policy

    def marked() -> object:
        policy = load_policy(str(tiny_policy_dir), max_plan_tokens=3)
        real = policy.sample

        def sample(*args, **kw):
            r = real(*args, **kw)
            r.self_certainty = np.where(r.forced, 1000.0, 1.0).astype(np.float32)
            return r

        policy.sample = sample
        return policy

    rewards = {}
    for flag in (True, False):
        cfg = resolve_config("iris-shapes", [*TINY, f"policy={tiny_policy_dir}", "reward=sc", "sc_source=sampling",
                                             f"mask_forced_tokens={str(flag).lower()}"])
        GRPOTrainer(cfg, tmp_path / str(flag), progress=False, policy=marked()).train()
        rewards[flag] = read_metrics(tmp_path / str(flag))[0]["reward/sc"]
    assert rewards[True] == pytest.approx(1.0) and rewards[False] > 10.0


def _summed_lr(name: str, *overrides: str) -> float:
    """The learning rate summed over every step of a preset's run, from its own scheduler."""
    import torch

    from irisbench.train.trainer import build_scheduler

    cfg = resolve_config(name, list(overrides))
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    scheduler, total = build_scheduler(optimizer, cfg), 0.0
    for _ in range(cfg.steps):
        total += optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    return total


def test_the_released_recipe_preset_and_its_null_twin() -> None:
    """iris-shapes-released: CFG 5 in training, 8 one-prompt micro-batches of G = 8, beta 0.01, linear decay,
    lr 1e-5 x 160 steps (the summed lr of the released 1e-6 x 1,600), val every 16 steps (10% of the run)."""
    cfg = resolve_config("iris-shapes-released")
    assert (cfg.reward, cfg.cfg, cfg.num_generations, cfg.prompts_per_step, cfg.gradient_accumulation_steps) == \
        ("nsc", 5.0, 8, 8, 8)
    assert cfg.prompts_per_step // cfg.gradient_accumulation_steps == 1  # a micro-batch = one prompt's 8 rollouts
    assert (cfg.beta, cfg.lr, cfg.lr_scheduler, cfg.warmup_steps, cfg.steps) == (0.01, 1e-5, "linear", 0, 160)
    assert (cfg.loss_type, cfg.logp_source, cfg.num_iterations) == ("bnpo", "conditional", 1)
    assert cfg.freeze_image_tokens and cfg.mask_forced_tokens
    assert (cfg.eval_every, cfg.checkpoint_every, cfg.eval_split) == (16, 16, "val")
    assert cfg.eval_every * 10 <= cfg.steps  # at least every 10% of the run
    # linear decay to 0: sum_{s=0}^{159} 1e-5 (160 - s) / 160 = 1e-5 x 80.5; the paper's 1e-6 x 800.5
    assert _summed_lr("iris-shapes-released") == pytest.approx(8.05e-4, rel=1e-9)
    paper = _summed_lr("iris-shapes-released", "lr=1e-6", "steps=1600")
    assert paper == pytest.approx(8.005e-4, rel=1e-9)
    assert _summed_lr("iris-shapes-released") == pytest.approx(paper, rel=0.01)
    null = resolve_config("null-shapes-released")
    assert null.reward == "random"
    assert {k: v for k, v in null.to_dict().items() if k != "reward"} == \
        {k: v for k, v in cfg.to_dict().items() if k != "reward"}
