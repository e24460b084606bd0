"""The weightless full-size dry run (``irisbench dryrun``): it runs the real code path of a Janus-Pro-1B
training step and fails, with one line, on a tensor the code makes on the CPU that meets the model's."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from irisbench.cli import app
from irisbench.dryrun.weightless import DryRunError, JanusSize, dry_run
from irisbench.train.config import resolve_config

runner = CliRunner()
SMALL = JanusSize("janus-pro-1b", hidden=64, layers=2, heads=4, mlp=128, pad_id=100002)
ONE_GROUP = ["prompts_per_step=1", "num_generations=2", "gradient_accumulation_steps=1"]


def test_the_1b_dry_run_runs_the_whole_step() -> None:
    """Janus-Pro-1B at full size (2.08 B parameters), no folder, no weights: an evaluation batch and a GRPO step."""
    import torch

    torch.set_num_threads(1)
    cfg = resolve_config("janus-pro-1b-iris", ONE_GROUP)
    report = dry_run(cfg, decode_steps=1, rows=2, measure=False)
    assert report["config_source"] == "built-in" and report["dtype"] == "bfloat16"
    assert 2.0e9 < report["parameters"] < 2.2e9
    assert report["eval_batch"]["image_shape"] == [384, 384, 3]
    # 512 CoT tokens (the stubbed CoT never ends) + 576 image tokens: never cut short
    assert report["eval_batch"]["tokens_per_row"] == 512 + 576
    assert report["grpo_step"]["rollouts"] == 2
    assert {"logp_gap_mean", "logp_gap_max", "grad_norm", "loss"} <= set(report["grpo_step"]["metrics"])
    f = report["flops"]
    assert f["sampling"] > 0 and f["teacher_forcing"] > 0 and f["backward"] > 0
    # backward of a linear layer is 2 matmuls for 1 forward: between 1x and 2x the policy's forward (the
    # teacher-forced FLOPs include the frozen reference's pass, which has no backward)
    assert 0.5 * f["teacher_forcing"] < f["backward"] < 2.0 * f["teacher_forcing"]


def _planted_compute_loss(self, batch, k, logp, mask):
    """The step-1 bug: advantages built on the CPU from the rewards, multiplied into the device's log-probs."""
    import torch

    adv = torch.as_tensor(batch.rewards[k], dtype=logp.dtype)  # on the CPU
    loss = -(logp * adv.unsqueeze(1) * mask).sum() / mask.sum()
    return loss, {"loss": 0.0, "num_tokens": 1, "clip_ratio/region_mean": 0.0}


def test_a_cpu_advantages_tensor_fails_the_dry_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import irisbench.train.trainer as trainer

    monkeypatch.setattr(trainer.GRPOTrainer, "_compute_loss", _planted_compute_loss)
    cfg = resolve_config("janus-pro-1b-iris", ONE_GROUP)
    with pytest.raises(DryRunError) as err:
        dry_run(cfg, decode_steps=1, rows=2, measure=False, size=SMALL)
    msg = str(err.value)
    assert "\n" not in msg and "GRPO step 1" in msg and "device mismatch" in msg and "cpu" in msg


def test_a_cpu_tensor_in_the_sampling_loop_fails_the_dry_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampling runs on fake CUDA tensors: position ids made on the CPU meet the cuda model."""
    import torch

    import irisbench.policies.janus_decode as decode

    monkeypatch.setattr(decode, "_positions", lambda mask: torch.zeros(mask.shape, dtype=torch.long))
    cfg = resolve_config("janus-pro-1b-iris", ONE_GROUP)
    with pytest.raises(DryRunError, match=r"evaluation batch \(fake cuda\): device mismatch at "
                                          r"policies/janus_decode.py:\d+: .*cpu and cuda:0"):
        dry_run(cfg, decode_steps=1, rows=2, measure=False, size=SMALL)


def test_the_clean_small_dry_run_passes_and_counts_what_the_update_holds() -> None:
    cfg = resolve_config("janus-pro-1b-iris", ONE_GROUP)
    report = dry_run(cfg, decode_steps=1, rows=2, measure=False, size=SMALL)
    mem = report["memory_bytes"]["update"]
    # AdamW keeps two moments of every trainable parameter, in the parameters' dtype (bf16)
    parts = report["parameters_by_part"]
    trainable = parts["language_model"] + parts["embed_tokens"] + parts["lm_head"]
    assert mem["opt"] == pytest.approx(2 * 2 * trainable, rel=0.01)
    assert mem["grad"] == pytest.approx(2 * trainable, rel=0.01)
    assert mem["param"] == 2 * 2 * parts["total"]  # bf16 policy and its frozen KL reference


def test_cli_dryrun_bad_inputs_are_one_line(tmp_path: Path) -> None:
    from janus_tiny import build_tiny_janus

    folder = build_tiny_janus(tmp_path / "janus-pro-1b")  # named like the release, sized like a toy
    result = runner.invoke(app, ["dryrun", "-c", "janus-pro-1b-iris", "--set", f"model={folder}"])
    assert result.exit_code == 2
    assert "text_config.hidden_size is 64, the recipe expects 2048" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, ["dryrun", "-c", "iris-shapes"])
    assert result.exit_code == 2 and "janus-pro" in result.output
    result = runner.invoke(app, ["dryrun", "--device", "tpu"])
    assert result.exit_code == 2 and "--device" in result.output
    result = runner.invoke(app, ["dryrun", "-w", "2", "-w", "0"])
    assert result.exit_code == 2 and "--world 0" in result.output and len(result.output.strip().splitlines()) == 1


def test_device_cuda_without_a_gpu_outside_a_dry_run(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    result = runner.invoke(app, ["train", "-c", "janus-pro-1b-iris", "--device", "cuda", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "no CUDA GPU is visible" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


# FSDP2 over a fake world (irisbench.dryrun.fake_world): rank 0 of 2, the trainer's own shard() on meta. SMALL's
# language model with small understanding and VQ towers (frozen, in FSDP's root unit) keeps these tests fast.
TWO_RANKS = ["prompts_per_step=2", "num_generations=2", "gradient_accumulation_steps=1",
             "policy_options.cot_max_new_tokens=8"]


@pytest.fixture
def small_towers(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig

    from irisbench.dryrun import weightless

    real = weightless.janus_config

    def config(size: JanusSize) -> object:
        h = size.hidden
        return JanusConfig(text_config=real(size).text_config,
                           vision_config=JanusVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                           image_size=16, patch_size=4, num_image_tokens=16,
                                                           projection_dim=h),
                           vq_config=JanusVQVAEConfig(embed_dim=8, num_embeddings=96, latent_channels=32,
                                                      base_channels=32, channel_multiplier=[1, 2], num_res_blocks=1,
                                                      projection_dim=h, image_token_embed_dim=h),
                           image_token_id=size.image_token_id, tie_word_embeddings=False)

    monkeypatch.setattr(weightless, "janus_config", config)


def _small_trainable() -> int:
    """SMALL's trainable parameters by hand: 2 blocks (q, k, v, o 64x64; gate, up 64x128, down 128x64; two
    norms), the final norm, the 102,400 x 64 token embeddings and the untied lm_head."""
    block = 4 * 64 * 64 + 3 * 64 * 128 + 2 * 64
    return 2 * block + 64 + 2 * 102400 * 64


def test_a_cpu_advantages_tensor_fails_the_fake_world_fsdp_dry_run(monkeypatch: pytest.MonkeyPatch,
                                                                   small_towers: None) -> None:
    import irisbench.train.trainer as trainer

    monkeypatch.setattr(trainer.GRPOTrainer, "_compute_loss", _planted_compute_loss)
    cfg = resolve_config("janus-pro-1b-iris", TWO_RANKS)
    with pytest.raises(DryRunError) as err:
        dry_run(cfg, decode_steps=1, measure=False, size=SMALL, world=2, eval_batch=False)
    msg = str(err.value)
    assert "\n" not in msg and "FSDP2 rank 0 of 2" in msg and "device mismatch" in msg and "cpu" in msg
    import torch.distributed as dist

    assert not dist.is_initialized()  # the fake group is left on failure too


def test_a_sharded_preset_dry_runs_as_one_process_and_under_a_fake_world(small_towers: None) -> None:
    """janus-pro-7b-iris says parallel: fsdp; one process without a group holds the whole model (no mesh to
    shard over without a GPU), and the fake world runs its sharded step."""
    cfg = resolve_config("janus-pro-7b-iris", ONE_GROUP + ["policy_options.cot_max_new_tokens=8"])
    assert cfg.parallel == "fsdp"
    single = dry_run(cfg, decode_steps=1, measure=False, size=SMALL, eval_batch=False)
    assert single["parallel"] == "ddp" and "FSDP2" in single["note"] and single["grpo_step"]["rollouts"] == 2
    sharded = dry_run(cfg, decode_steps=1, size=SMALL, world=1, eval_batch=False)
    assert sharded["parallel"] == "fsdp" and sharded["world"] == 1 and "note" not in sharded


def test_the_fake_world_shards_parameters_gradients_and_adamw_state_by_two(small_towers: None) -> None:
    cfg = resolve_config("janus-pro-1b-iris", TWO_RANKS)
    report = dry_run(cfg, decode_steps=1, size=SMALL, world=2, eval_batch=False)
    assert report["parallel"] == "fsdp" and report["world"] == 2 and report["grpo_step"]["rollouts"] == 2
    mem, parts = report["memory_bytes"]["update"], report["parameters_by_part"]
    trainable = _small_trainable()
    assert parts["language_model"] + parts["embed_tokens"] + parts["lm_head"] == trainable
    # every trainable tensor's first dimension is even: each rank holds exactly half, in bf16
    assert mem["grad"] == 2 * trainable // 2
    assert mem["opt"] == 2 * 2 * trainable // 2  # two AdamW moments
    # the policy and its KL reference, sharded: half of 2 x 2 bytes x all parameters, less than one row of
    # padding per odd-sized tensor on rank 0 (FSDP2 gives rank 0 the larger half)
    assert 0 <= mem["param"] - 2 * parts["total"] < 4096
    fsdp = report["memory_bytes"]["fsdp_peak"]
    assert fsdp["sharded_param"] == mem["param"] and fsdp["optstate"] >= mem["opt"]
    sampling = report["memory_bytes"]["fsdp_sampling"]
    # sampling runs inside gathered(): the whole policy (not the reference) on the rank, beside the shards
    assert sampling["unsharded_param"] >= 2 * parts["total"] and sampling["sharded_grad"] == mem["grad"]


def test_the_table_keeps_whole_groups_and_reads_the_tracker_by_hand() -> None:
    from irisbench.dryrun.cost import fake_world_row
    from irisbench.dryrun.table import _accumulation, fsdp_table

    assert (_accumulation(1, 2), _accumulation(4, 2), _accumulation(6, 4)) == (1, 2, 3)
    cfg = resolve_config("janus-pro-1b-iris")  # 8 prompts per step: 3 ranks cannot take whole groups
    assert "infeasible" in fsdp_table(cfg, [3])[0]
    gb = 1e9
    report = {"world": 4, "grpo_step": {"rollouts": 16, "micro_batch_rows": 8},
              "shape": {"layers": 2, "batch_size": 3, "kv_width": 5, "image_len": 7},
              "memory_bytes": {"fsdp_peak": {"sharded_param": 1 * gb, "unsharded_param": 2 * gb, "all_gather": 0.5 * gb,
                                             "sharded_grad": 0.25 * gb, "optstate": 3 * gb, "activation": 4 * gb,
                                             "temp": 1 * gb, "total": 11.75 * gb},
                               "fsdp_sampling": {"sharded_param": 1 * gb, "unsharded_param": 6 * gb, "total": 7 * gb}}}
    row = fake_world_row(report)
    kv = 2 * 2 * 2 * 3 * 5 * 7 * 2  # K and V, layers, CFG rows, width, length, bf16
    assert row["source"] == "fake-world" and row["gpus"] == 4
    assert row["update"]["gathered"] == 2.5 and row["update"]["grads"] == 0.25 and row["update"]["adamw"] == 3.0
    assert row["sampling"]["total"] == round((7 * gb + kv) / gb, 2) and row["peak"] == 11.75
