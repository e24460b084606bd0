"""Loud failures instead of silent ones: zero reward spread or a zero gradient stop the run with one line; the
Janus image tokens are never treated as truncated; the rollout/replay log-prob gap is logged and small in fp32;
the CFG unconditional rows pad with the checkpoint's own pad id (Janus-Pro-1B 100002, -7B 100015)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from irisbench.train.config import ConfigError, resolve_config
from irisbench.train.trainer import GRPOTrainer, TrainingStalledError, check_stall, read_metrics


def _cfg(policy: Path, *extra: str):
    return resolve_config("iris-shapes", [f"policy={policy}", "steps=5", "prompts_per_step=2", "num_generations=4",
                                          "eval_every=0", "checkpoint_every=5", "lr=1e-3", *extra])


def test_check_stall_by_hand() -> None:
    cfg = resolve_config("iris-shapes", ["zero_spread_steps=3"])
    run = 0
    for step in range(2):
        run = check_stall(step, run, 1.0, 0.0, cfg)  # all groups flat, zero gradient: explained, counted
    assert run == 2
    assert check_stall(2, run, 0.5, 0.3, cfg) == 0  # one group with spread resets the count
    with pytest.raises(TrainingStalledError, match="step 3: every group's rewards were identical for 3"):
        check_stall(2, run, 1.0, 0.0, cfg)
    with pytest.raises(TrainingStalledError, match="step 7: the gradient norm is exactly 0 although rewards differ"):
        check_stall(6, 0, 0.5, 0.0, cfg)
    assert check_stall(9, 5, 1.0, 0.0, resolve_config("iris-shapes", ["zero_spread_steps=0"])) == 6
    with pytest.raises(ConfigError, match="zero_spread_steps"):
        resolve_config("iris-shapes", ["zero_spread_steps=-1"])


class _Constant:
    name = "constant"

    def __call__(self, rollout, context) -> np.ndarray:
        return np.ones(len(rollout), dtype=np.float64)


def test_a_constant_reward_stops_after_k_steps(tiny_policy_dir: Path, tmp_path: Path) -> None:
    trainer = GRPOTrainer(_cfg(tiny_policy_dir, "zero_spread_steps=2"), tmp_path / "run", progress=False,
                          reward=_Constant())
    with pytest.raises(TrainingStalledError, match="step 2: every group's rewards were identical for 2"):
        trainer.train()
    assert [r["frac_reward_zero_std"] for r in read_metrics(tmp_path / "run")] == [1.0, 1.0]


def test_a_zeroed_loss_stops_at_step_1(tiny_policy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rewards differ but the loss is multiplied by 0 (a rule that zeroes it): grad_norm is exactly 0."""
    real = GRPOTrainer._compute_loss

    def zeroed(self, batch, k, logp, mask):
        loss, metrics = real(self, batch, k, logp, mask)
        return loss * 0.0, metrics

    monkeypatch.setattr(GRPOTrainer, "_compute_loss", zeroed)
    trainer = GRPOTrainer(_cfg(tiny_policy_dir), tmp_path / "run", progress=False)
    with pytest.raises(TrainingStalledError, match="step 1: the gradient norm is exactly 0"):
        trainer.train()
    (row,) = read_metrics(tmp_path / "run")
    assert row["grad_norm"] == 0.0 and row["frac_reward_zero_std"] < 1.0


def _janus(tmp_path: Path, pad_id: int | None = None, cot_max_new_tokens: int = 3):
    """A tiny fp32 Janus; with ``pad_id``, a vocabulary wide enough for Janus-Pro's special ids."""
    import torch
    from janus_tiny import build_tiny_janus

    from irisbench.policies.janus import JanusPolicy

    torch.set_num_threads(1)
    if pad_id is None:
        return JanusPolicy.from_pretrained(build_tiny_janus(tmp_path / "janus"), device="cpu",
                                           cot_max_new_tokens=cot_max_new_tokens)
    from transformers import JanusConfig, JanusForConditionalGeneration, JanusVisionConfig, JanusVQVAEConfig

    from irisbench.dryrun.weightless import ConfigTokenizer, JanusSize, janus_config

    size = JanusSize("janus-pro", hidden=32, layers=1, heads=2, mlp=64, pad_id=pad_id)
    big = janus_config(size)
    config = JanusConfig(text_config=big.text_config,
                         vision_config=JanusVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                         image_size=16, patch_size=4, num_image_tokens=16,
                                                         projection_dim=32),
                         vq_config=JanusVQVAEConfig(embed_dim=8, num_embeddings=96, latent_channels=32,
                                                    base_channels=32, channel_multiplier=[1, 2], num_res_blocks=1,
                                                    projection_dim=32, image_token_embed_dim=32),
                         image_token_id=size.image_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = JanusForConditionalGeneration(config).eval()
    return JanusPolicy(model, ConfigTokenizer(size), cot_max_new_tokens=cot_max_new_tokens)


@pytest.mark.parametrize("pad_id", [100002, 100015])
def test_the_cfg_unconditional_rows_pad_with_the_checkpoints_id(tmp_path: Path, pad_id: int) -> None:
    import torch

    policy = _janus(tmp_path, pad_id=pad_id)
    assert policy.pad_id == pad_id
    seen: list[torch.Tensor] = []
    hook = policy.model.get_input_embeddings().register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    try:
        rollout = policy.sample(["a red cube"], n=1, seed=0, cfg=3.0)
    finally:
        hook.remove()
    prefill = [ids for ids in seen if ids.shape[0] == 2 and ids.shape[1] > 1][-1]  # the image loop: [cond; uncond]
    cond, uncond = prefill[0], prefill[1]
    keep = (cond == policy.bos_id) | (cond == policy.boi_id)
    assert bool((uncond[~keep] == pad_id).all()) and bool((uncond[keep] == cond[keep]).all())
    other = 100015 if pad_id == 100002 else 100002
    assert not bool((uncond == other).any())
    assert rollout.extras["num_image_tokens"] == 16


def test_image_tokens_are_never_truncated_and_the_replay_gap_is_small(tmp_path: Path) -> None:
    """A CoT cut at its cap leaves all 16 image tokens in every row, in the loss mask; one GRPO step logs the gap
    between the sampling loop's log-probs and the teacher-forced replay, below 1e-4 in fp32."""
    from irisbench.policies.base import IMAGE

    policy = _janus(tmp_path, cot_max_new_tokens=2)
    rollout = policy.sample(["a red cube", "two cats"], n=2, seed=0)
    image = (rollout.modality == IMAGE) & rollout.token_mask
    assert (image.sum(1) == 16).all() and rollout.forced is None
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red apple on a table\ntwo cats\n")
    cfg = resolve_config("janus-pro-1b-iris", [f"model={policy.checkpoint}", f"prompts_file={prompts}", "steps=1",
                                               "prompts_per_step=1", "num_generations=2", "mask_forced_tokens=true",
                                               "gradient_accumulation_steps=1", "checkpoint_every=1", "cfg=2.0",
                                               "lr=1e-3", "num_threads=1"])
    GRPOTrainer(cfg, tmp_path / "run", progress=False, policy=policy).train()
    (row,) = read_metrics(tmp_path / "run")
    assert 0.0 <= row["logp_gap_mean"] <= row["logp_gap_max"] < 1e-4
