"""The GRPO trainer: configs and their errors, exact resume after kill -9, divergence guard,
gradient accumulation and 2-process data parallelism equal to one process, reward signs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from grpo_helpers import close, grads, torchrun_train
from typer.testing import CliRunner

from irisbench.cli import app
from irisbench.train.config import ConfigError, resolve_config
from irisbench.train.trainer import TIMING_KEYS, GRPOTrainer, TrainingDivergedError, read_metrics

runner = CliRunner()


def _cfg(policy: Path, *extra: str):
    return resolve_config("iris-shapes", [f"policy={policy}", "steps=3", "prompts_per_step=2", "num_generations=4",
                                          "eval_every=0", "checkpoint_every=1", "lr=1e-3", *extra])


def _no_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _weights(run: Path, step: int) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(run / "checkpoints" / f"step-{step}" / "model.safetensors"))


# ---- configs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["num_generations=1"], "num_generations must be an integer >= 2"),
        (["gradient_accumulation_steps=3"], "valid: [1, 2, 4, 8]"),
        (["reward=nsk"], "did you mean 'nsc'"),
        (["reward=[nsc, verifier]", "reward_weights=[1.0]"], "reward_weights has 1"),
        (["num_generation=4"], "did you mean 'num_generations'"),
        (["loss_type=ppo"], "loss_type must be one of"),
        (["cfg=-1"], "cfg must be >= 0"),
    ],
)
def test_bad_configs_are_refused_clearly(overrides: list[str], needle: str) -> None:
    with pytest.raises(ValueError) as e:
        resolve_config("iris-shapes", overrides)
    assert needle.lower() in str(e.value).lower()


def test_config_file_with_unknown_keys_names_them(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("base: iris-shapes\nsteps: 5\nnum_generation: 4\nwarmup: 3\n")
    with pytest.raises(ConfigError) as e:
        resolve_config(f)
    assert "num_generation" in str(e.value) and "warmup" in str(e.value) and str(f) in str(e.value)
    result = runner.invoke(app, ["train", "--config", str(f)])
    assert result.exit_code != 0 and "num_generation" in result.output


def test_every_preset_resolves() -> None:
    from irisbench.train.config import preset_names

    for name in preset_names():
        cfg = resolve_config(name)
        assert cfg.num_generations >= 2


@pytest.mark.parametrize("kind", ["constant", "linear", "cosine"])
def test_lr_schedules_by_hand(kind: str) -> None:
    """transformers' schedules equal the former hand-written ones after the warmup; the warmup runs s / w of
    the peak at step s (transformers' convention; the former one ran (s + 1) / w)."""
    import math

    import torch

    from irisbench.train.trainer import build_scheduler

    cfg = resolve_config("iris-shapes", [f"lr_scheduler={kind}", "steps=12", "warmup_steps=4"])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = build_scheduler(opt, cfg)
    seen = []
    for _ in range(cfg.steps):
        seen.append(opt.param_groups[0]["lr"] / cfg.lr)
        opt.step()
        sched.step()
    decay = {"constant": lambda p: 1.0, "linear": lambda p: 1.0 - p,
             "cosine": lambda p: 0.5 * (1 + math.cos(math.pi * p))}[kind]
    assert seen[:4] == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert seen[4:] == pytest.approx([decay((s - 4) / 8) for s in range(4, 12)])


# ---- training ------------------------------------------------------------------------------------------


def test_train_writes_metrics_checkpoints_and_learns_direction(tiny_policy_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    last = GRPOTrainer(_cfg(tiny_policy_dir), run, progress=False).train()
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("reward_mean", "reward_std", "sc_text", "sc_image", "entropy_image", "kl", "loss", "lr",
                "frac_reward_zero_std", "plan_len", "t_sample", "t_forward", "t_backward", "t_optimizer"):
        assert key in rows[0], key
    assert last.name == "step-3" and (run / "train" / "metrics.parquet").is_file()
    # the update moved the weights
    before = _weights(run, 1)
    after = _weights(run, 3)
    assert any(not np.array_equal(before[k], after[k]) for k in before)


def test_resume_with_a_different_config_is_refused(tiny_policy_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    GRPOTrainer(_cfg(tiny_policy_dir, "steps=1"), run, progress=False).train()
    with pytest.raises(ValueError) as e:
        GRPOTrainer(_cfg(tiny_policy_dir, "steps=1", "lr=5e-4"), run, progress=False).train()
    assert "lr" in str(e.value) and "0.001" in str(e.value)
    GRPOTrainer(_cfg(tiny_policy_dir, "steps=2", "lr=5e-4"), run, progress=False, allow_config_change=True).train()
    assert [r["step"] for r in read_metrics(run)] == [1, 2]
    # the thread count says how the run executes, not what it trains: it resumes (the change logged)
    GRPOTrainer(_cfg(tiny_policy_dir, "steps=3", "lr=5e-4", "num_threads=2"), run, progress=False,
                allow_config_change=True).train()
    GRPOTrainer(_cfg(tiny_policy_dir, "steps=3", "lr=5e-4", "num_threads=1"), run, progress=False).train()
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]
    assert "num_threads: 2 -> 1" in (run / "resumes.jsonl").read_text().splitlines()[-1]


_CHILD = """
import sys
from irisbench.train.config import resolve_config
from irisbench.train.trainer import GRPOTrainer
cfg = resolve_config("iris-shapes", sys.argv[2:])
GRPOTrainer(cfg, sys.argv[1], progress=False).train()
"""


@pytest.mark.slow
def test_exact_resume_after_kill_9(tiny_policy_dir: Path, tmp_path: Path) -> None:
    args = [f"policy={tiny_policy_dir}", "steps=4", "prompts_per_step=2", "num_generations=4", "eval_every=0",
            "checkpoint_every=1", "lr=1e-3"]
    ref = tmp_path / "ref"
    GRPOTrainer(resolve_config("iris-shapes", args), ref, progress=False).train()
    run = tmp_path / "crash"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(run), *args])
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "step-2" / "trainer_state.json").exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run / "checkpoints" / "step-2").is_dir()
    GRPOTrainer(resolve_config("iris-shapes", args), run, progress=False).train()
    a, b = _no_timing(read_metrics(ref)), _no_timing(read_metrics(run))
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k] == pytest.approx(y[k], rel=1e-6, abs=1e-9), k
    wa, wb = _weights(ref, 4), _weights(run, 4)
    assert all(np.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_an_in_training_evaluation_cut_short_is_finished_on_resume(tiny_policy_dir: Path, tmp_path: Path) -> None:
    """Stopped during the evaluation of a checkpoint (mid-run, or of the last step): resuming finishes that
    evaluation with the records an uninterrupted run wrote, and the experiment does not take the run as done."""
    import shutil

    from irisbench.experiment.run import finished_run
    from irisbench.train.trainer import eval_finished, eval_folder

    args = [f"policy={tiny_policy_dir}", "steps=2", "prompts_per_step=2", "num_generations=2", "eval_every=1",
            "eval_prompts=4", "eval_images_per_prompt=1", "checkpoint_every=1", "lr=1e-3"]
    cfg = resolve_config("iris-shapes", args)
    ref, run = tmp_path / "ref", tmp_path / "run"
    GRPOTrainer(cfg, ref, progress=False).train()
    shutil.copytree(ref, run)
    assert finished_run(run, cfg.to_dict(), 2)

    def cut(step: int) -> None:  # what a stop during that evaluation leaves: some records, no results.json
        folder = eval_folder(run, "val", step)
        (folder / "results.json").unlink()
        lines = (folder / "records.jsonl").read_text().splitlines(keepends=True)
        (folder / "records.jsonl").write_text("".join(lines[:1]))
        assert not eval_finished(run, "val", step)

    def scores(root: Path, step: int) -> dict:
        return json.loads((eval_folder(root, "val", step) / "results.json").read_text())["scores"]

    cut(2)  # the last step's evaluation
    assert not finished_run(run, cfg.to_dict(), 2)
    GRPOTrainer(cfg, run, progress=False).train()
    assert finished_run(run, cfg.to_dict(), 2) and scores(run, 2) == scores(ref, 2)
    # mid-run: step 1's evaluation cut short, so step 2 was never trained
    shutil.rmtree(run / "checkpoints" / "step-2")
    shutil.rmtree(eval_folder(run, "val", 2))
    cut(1)
    GRPOTrainer(cfg, run, progress=False).train()
    assert scores(run, 1) == scores(ref, 1) and scores(run, 2) == scores(ref, 2)
    assert [r["step"] for r in read_metrics(run)] == [1, 2]
    wa, wb = _weights(ref, 2), _weights(run, 2)
    assert all(np.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_non_finite_logits_stop_the_run_and_keep_the_last_good_checkpoint(tiny_policy_dir: Path,
                                                                          tmp_path: Path) -> None:
    import torch

    from irisbench.policies import load_policy

    policy = load_policy(str(tiny_policy_dir))
    real = policy.token_logits
    calls = {"n": 0}

    def poisoned(rollout, **kw):
        calls["n"] += 1
        out = real(rollout, **kw)
        if calls["n"] >= 2:
            out.logp = out.logp + torch.tensor(float("nan"))
        return out

    policy.token_logits = poisoned
    run = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match="step 2"):
        GRPOTrainer(_cfg(tiny_policy_dir), run, progress=False, policy=policy).train()
    assert (run / "checkpoints" / "step-1" / "trainer_state.json").is_file()
    assert not (run / "checkpoints" / "step-2").exists()


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_gradient_accumulation_gives_the_same_update(tiny_policy_dir: Path, tmp_path: Path, loss_type: str) -> None:
    """dapo (the step's token mean) and grpo (the mean of sequence means) do not depend on the micro-batches."""
    a = GRPOTrainer(_cfg(tiny_policy_dir, "steps=1", f"loss_type={loss_type}"), tmp_path / "a", progress=False)
    a.train()
    b = GRPOTrainer(_cfg(tiny_policy_dir, "steps=1", f"loss_type={loss_type}", "gradient_accumulation_steps=2"),
                    tmp_path / "b", progress=False)
    b.train()
    assert close(grads(a), grads(b))
    ma, mb = read_metrics(tmp_path / "a")[0], read_metrics(tmp_path / "b")[0]
    assert ma["loss"] == pytest.approx(mb["loss"], abs=1e-6)
    assert ma["reward_mean"] == pytest.approx(mb["reward_mean"], rel=1e-6)


@pytest.mark.slow
def test_two_processes_equal_one_and_ranks_stay_identical(tiny_policy_dir: Path, tmp_path: Path) -> None:
    args = [f"policy={tiny_policy_dir}", "steps=1", "prompts_per_step=2", "num_generations=4", "eval_every=1",
            "eval_prompts=4", "eval_images_per_prompt=1", "checkpoint_every=1", "lr=1e-3"]
    # bnpo (the preset's) is the token mean of each micro-batch: one process with two micro-batches holds the
    # same micro-batches as two processes with one each
    one = GRPOTrainer(resolve_config("iris-shapes", [*args, "gradient_accumulation_steps=2"]), tmp_path / "one",
                      progress=False)
    one.train()
    # both ranks end with exactly the same weights and gradient (checked by torchrun_train) ...
    two = torchrun_train(tmp_path, tmp_path / "two", "iris-shapes", args)
    # ... and the gradient equals the one-process gradient for the same global batch
    assert close(grads(one), np.load(two / "g0.npy"))
    m1, m2 = read_metrics(tmp_path / "one")[0], read_metrics(two)[0]
    for k in ("reward_mean", "reward_std", "loss", "frac_reward_zero_std", "train_correct", "plan_len"):
        assert m1[k] == pytest.approx(m2[k], rel=1e-5, abs=1e-7), k
    # the in-training evaluation runs on every rank (prompts sharded) and gives the one-process records
    r1, r2 = (json.loads((tmp_path / run / "eval" / "val" / "step-1" / "results.json").read_text())
              for run in ("one", "two"))
    assert r2["counts"]["processes"] == 2 and r2["counts"]["actual"] == r1["counts"]["actual"] == 4
    assert r2["scores"] == r1["scores"]


def test_cli_train_runs_and_resumes(tiny_policy_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--no-progress", "--set", f"policy={tiny_policy_dir}", "--set", "steps=1",
            "--set", "prompts_per_step=2", "--set", "num_generations=2", "--set", "eval_every=0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads(json.dumps(__import__("yaml").safe_load((out / "config.yaml").read_text())))
    assert saved["num_generations"] == 2 and saved["reward"] == "nsc"
    result = runner.invoke(app, [*args[:-4], "--set", "num_generations=4", "--set", "eval_every=0"])
    assert result.exit_code != 0 and "num_generations" in result.output


@pytest.mark.parametrize("logp_source", ["conditional", "guided"])
def test_grpo_drives_a_tiny_janus(tmp_path: Path, logp_source: str) -> None:
    """The same trainer drives Janus-Pro (open world): a tiny random Janus, one step, frozen image parts."""
    import torch
    from janus_tiny import build_tiny_janus

    torch.set_num_threads(1)
    folder = build_tiny_janus(tmp_path / "janus")
    prompts = tmp_path / "train_prompts.txt"
    prompts.write_text("a red apple on a table\ntwo cats\n")
    with pytest.raises(ConfigError, match="prompts_file"):
        GRPOTrainer(resolve_config("janus-pro-1b-iris", [f"model={folder}"]), tmp_path / "x", progress=False).train()
    cfg = resolve_config("janus-pro-1b-iris", [f"model={folder}", f"prompts_file={prompts}", "steps=1",
                                               "prompts_per_step=1", "num_generations=2",
                                               "gradient_accumulation_steps=1", "checkpoint_every=1", "cfg=2.0",
                                               f"logp_source={logp_source}", "lr=1e-3", "num_threads=1"])
    trainer = GRPOTrainer(cfg, tmp_path / "run", progress=False)
    trainer.train()
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == 1 and np.isfinite(rows[0]["loss"]) and rows[0]["sc_image"] > 0
    frozen = [n for n, p in trainer.policy.model.named_parameters() if not p.requires_grad]
    assert any("vqmodel" in n for n in frozen) and any("generation_head" in n for n in frozen)
    assert all(p.grad is None for n, p in trainer.policy.model.named_parameters() if not p.requires_grad)
    # resuming finds the Janus checkpoint by its config and has nothing left to do
    assert GRPOTrainer(cfg, tmp_path / "run", progress=False).train().name == "step-1"


def test_no_plan_ablation_writes_only_the_end_of_plan(tiny_policy_dir: Path, tmp_path: Path) -> None:
    cfg = resolve_config("no-plan-shapes", [f"policy={tiny_policy_dir}", "steps=1", "prompts_per_step=2",
                                            "num_generations=2", "eval_every=0", "checkpoint_every=1",
                                            "num_threads=1"])
    GRPOTrainer(cfg, tmp_path / "run", progress=False).train()
    assert read_metrics(tmp_path / "run")[0]["plan_len"] == 1.0  # EOP only
    saved = json.loads((tmp_path / "run" / "checkpoints" / "step-1" / "irisbench_policy.json").read_text())
    assert saved["sampling"]["max_plan_tokens"] == 1  # the checkpoint keeps generating without a plan


# ---- the update's direction, and where the reward reads self-certainty -------------------------------------


class _ShortPlan:
    """A known reward: minus the plan length, so it favours one token, the end of plan (EOP)."""

    name = "short-plan"

    def __call__(self, rollout, context) -> np.ndarray:
        return -(rollout.token_mask & (rollout.modality == 0)).sum(1).astype(np.float64)


def test_the_update_moves_a_known_reward_up(tiny_policy_dir: Path, tmp_path: Path) -> None:
    """Two steps on "shorter plans are better" raise the policy's probability of EOP at every plan position of a
    fixed probe (teacher-forced, so no sampling noise); a flipped loss sign lowers it."""
    import torch

    from irisbench.policies import load_policy

    base = load_policy(str(tiny_policy_dir))
    probe = base.sample(["a photo of a red circle", "a photo of two blue squares"], n=4, seed=123)
    eop = len(base.vocab.text_ids) - 1  # the local index of EOP in the plan vocabulary

    def p_eop(policy) -> float:
        with torch.no_grad():
            tf = policy.token_logits(probe)
        text = tf.mask & (tf.modality == 0)
        return float(tf.parts["text_logits"].softmax(-1)[..., eop][text].mean())

    trainer = GRPOTrainer(_cfg(tiny_policy_dir, "steps=2", "checkpoint_every=2", "lr=1e-2"), tmp_path / "run",
                          progress=False, reward=_ShortPlan())
    trainer.train()
    before, after = p_eop(base), p_eop(trainer.policy)
    assert after > 1.05 * before, (before, after)
    assert [r["reward/short-plan"] for r in read_metrics(tmp_path / "run")] == \
        [r["reward_mean"] for r in read_metrics(tmp_path / "run")]


@pytest.mark.parametrize(("sc_source", "marker"), [("teacher-forced", 1.0), ("second-pass", 2.0), ("sampling", 3.0)])
def test_sc_source_decides_what_the_reward_reads(tiny_policy_dir: Path, tmp_path: Path, sc_source: str,
                                                 marker: float) -> None:
    """The policy's three sources of self-certainty carry different marks: the sampling loop's 3, the teacher-
    forced pass that also gives the log-probs (gradients on) 1, a second pass without gradients 2. The reward
    ``sc`` (the mean self-certainty over all tokens) logs the mark of the configured source."""
    import torch

    from irisbench.policies import load_policy

    policy = load_policy(str(tiny_policy_dir))
    real_sample, real_tf = policy.sample, policy.token_logits

    def sample(*args, **kw):
        r = real_sample(*args, **kw)
        r.self_certainty = np.full_like(r.self_certainty, 3.0)
        return r

    def token_logits(rollout, **kw):
        out = real_tf(rollout, **kw)
        out.self_certainty = torch.full_like(out.self_certainty, 1.0 if torch.is_grad_enabled() else 2.0)
        return out

    policy.sample, policy.token_logits = sample, token_logits
    cfg = _cfg(tiny_policy_dir, "steps=1", "reward=sc", f"sc_source={sc_source}")
    GRPOTrainer(cfg, tmp_path / "run", progress=False, policy=policy).train()
    (row,) = read_metrics(tmp_path / "run")
    assert row["reward/sc"] == pytest.approx(marker) and row["reward_mean"] == pytest.approx(marker)


class _SeedReward:
    """A reward with spread in every group (each rollout's sampling seed mod 1000); with ``live=k`` only group
    ``k`` keeps it and every other group is flat (all 0: zero advantage, no policy gradient)."""

    name = "seed-mod"

    def __init__(self, g: int, live: int | None = None) -> None:
        self.g, self.live = g, live

    def __call__(self, rollout, context) -> np.ndarray:
        r = (np.asarray(rollout.seeds, dtype=np.int64) % 1000).astype(np.float64)
        if self.live is not None:
            keep = np.zeros(len(r), dtype=bool)
            keep[self.live * self.g:(self.live + 1) * self.g] = True
            r[~keep] = 0.0
        return r


def test_accumulation_8_averages_the_per_prompt_token_means(tiny_policy_dir: Path, tmp_path: Path) -> None:
    """The released recipe's step (iris-shapes-released: 8 prompts, gradient_accumulation_steps 8, bnpo) is the
    official trainer's: the mean over the 8 one-prompt micro-batches of each micro-batch's token-mean gradient.
    Reference: 8 unaccumulated steps, each with only group k's rewards live; the token mean over the whole
    step (N kept tokens) times N / N_k is group k's own token-mean gradient."""
    g = 2
    args = [f"policy={tiny_policy_dir}", "steps=1", f"num_generations={g}", "eval_every=0", "checkpoint_every=1",
            "num_threads=1", "max_grad_norm=1e9", "zero_spread_steps=0"]
    cfg = resolve_config("iris-shapes-released", args)
    assert (cfg.prompts_per_step, cfg.gradient_accumulation_steps, cfg.loss_type) == (8, 8, "bnpo")
    acc = GRPOTrainer(cfg, tmp_path / "acc", progress=False, reward=_SeedReward(g))
    acc.train()
    rollout = acc.last_rollout
    kept = rollout.token_mask & ~rollout.forced
    n_all, n_group = float(kept.sum()), kept.reshape(8, g, -1).sum(axis=(1, 2)).astype(float)
    assert len(set(n_group.tolist())) > 1  # unequal plan lengths: the two normalisations differ
    expected = np.zeros_like(grads(acc))
    for k in range(8):
        one = GRPOTrainer(resolve_config("iris-shapes-released", [*args, "gradient_accumulation_steps=1"]),
                          tmp_path / f"group-{k}", progress=False, reward=_SeedReward(g, live=k))
        one.train()
        assert np.array_equal(one.last_rollout.tokens, rollout.tokens)  # the same rollouts
        expected += grads(one) * (n_all / n_group[k]) / 8
    assert close(expected, grads(acc))
    flat = GRPOTrainer(resolve_config("iris-shapes-released", [*args, "gradient_accumulation_steps=1"]),
                       tmp_path / "flat", progress=False, reward=_SeedReward(g))
    flat.train()
    assert not close(grads(flat), grads(acc))  # the whole step's token mean is another gradient
