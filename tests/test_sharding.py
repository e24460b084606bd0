"""``parallel: fsdp``: the sharded update equals the replicated one (1 and 2 processes, shapes LM and a tiny
Janus with tied embeddings and a KL reference), checkpoints keep the unsharded layout (resume across
modes and from sharded state), in-training evaluation shards by rank, the CLI runs under torchrun, and a
policy that cannot be sharded says why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from grpo_helpers import close, grads, torchrun_train

from irisbench.train.config import resolve_config
from irisbench.train.sharding import ShardingError, shard
from irisbench.train.trainer import GRPOTrainer, read_metrics

SHAPES_ARGS = ["steps=2", "prompts_per_step=2", "num_generations=4", "eval_every=0", "checkpoint_every=1",
               "lr=1e-3", "num_threads=1"]


def _janus_args(folder: Path, prompts: Path) -> list[str]:
    return [f"model={folder}", f"prompts_file={prompts}", "steps=2", "prompts_per_step=2", "num_generations=2",
            "gradient_accumulation_steps=1", "checkpoint_every=1", "cfg=2.0", "logp_source=guided", "lr=1e-3",
            "num_threads=1"]


def _checkpoint(run: Path, step: int, name: str = "model.safetensors") -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(run / "checkpoints" / f"step-{step}" / name))


def _assert_same_checkpoint(a: Path, b: Path, step: int) -> None:
    """Adam's moments (the gradients, step by step) to 1e-4 of their scale; weights within one lr=1e-3 step,
    since Adam moves an element by about lr however small its gradient, so round-off in a near-zero
    gradient element can move it by up to lr."""
    for name, rtol, atol in (("model.safetensors", 0.0, 1e-3), ("optimizer.safetensors", 1e-4, 1e-12)):
        wa, wb = _checkpoint(a, step, name), _checkpoint(b, step, name)
        assert sorted(wa) == sorted(wb), name
        for key in wa:
            if key == "rng.torch":
                continue
            scale = float(np.abs(wa[key]).max())
            assert float(np.abs(wa[key] - wb[key]).max()) <= rtol * scale + atol, (name, key)


def _assert_same_metrics(a: Path, b: Path, keys: tuple[str, ...]) -> None:
    ma, mb = read_metrics(a), read_metrics(b)
    assert len(ma) == len(mb)
    for ra, rb in zip(ma, mb, strict=True):
        for k in keys:
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-7), k


# ---- one process ----------------------------------------------------------------------------------------


def test_fsdp_in_one_process_gives_the_ddp_update(tiny_policy_dir: Path, tmp_path: Path) -> None:
    args = [f"policy={tiny_policy_dir}", *SHAPES_ARGS]
    ddp = GRPOTrainer(resolve_config("iris-shapes", args), tmp_path / "ddp", progress=False)
    ddp.train()
    fsdp = GRPOTrainer(resolve_config("iris-shapes", [*args, "parallel=fsdp"]), tmp_path / "fsdp", progress=False)
    fsdp.train()
    from torch.distributed.tensor import DTensor

    assert all(isinstance(p, DTensor) for p in fsdp.policy.model.parameters())  # it really is sharded
    for step in (1, 2):
        _assert_same_checkpoint(tmp_path / "ddp", tmp_path / "fsdp", step)
    _assert_same_metrics(tmp_path / "ddp", tmp_path / "fsdp", ("loss", "reward_mean", "grad_norm", "sc_image"))
    # the checkpoint loads as an ordinary policy folder
    cfg = json.loads((tmp_path / "fsdp" / "checkpoints" / "step-2" / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]


def test_fsdp_drives_a_tiny_janus_with_tied_embeddings_and_a_reference(tiny_janus: tuple[Path, Path],
                                                                        tmp_path: Path) -> None:
    folder, prompts = tiny_janus
    args = _janus_args(folder, prompts)
    GRPOTrainer(resolve_config("janus-pro-1b-iris", args), tmp_path / "ddp", progress=False).train()
    trainer = GRPOTrainer(resolve_config("janus-pro-1b-iris", [*args, "parallel=fsdp"]), tmp_path / "fsdp",
                          progress=False)
    trainer.train()
    model = trainer.policy.model
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight  # tied, one FSDP group
    for step in (1, 2):
        _assert_same_checkpoint(tmp_path / "ddp", tmp_path / "fsdp", step)
    _assert_same_metrics(tmp_path / "ddp", tmp_path / "fsdp", ("loss", "kl", "reward_mean", "grad_norm"))
    assert read_metrics(tmp_path / "fsdp")[1]["kl"] > 0  # the (sharded) reference took part
    from safetensors.numpy import load_file

    ra = load_file(str(tmp_path / "ddp" / "checkpoints" / "reference" / "model.safetensors"))
    rb = load_file(str(tmp_path / "fsdp" / "checkpoints" / "reference" / "model.safetensors"))
    assert sorted(ra) == sorted(rb) and all(np.array_equal(ra[k], rb[k]) for k in ra)


def test_a_ddp_checkpoint_resumes_under_fsdp_with_the_same_result(tiny_policy_dir: Path, tmp_path: Path) -> None:
    args = [f"policy={tiny_policy_dir}", *SHAPES_ARGS]
    GRPOTrainer(resolve_config("iris-shapes", args), tmp_path / "straight", progress=False).train()
    first = [a if a != "steps=2" else "steps=1" for a in args]
    GRPOTrainer(resolve_config("iris-shapes", first), tmp_path / "mixed", progress=False).train()
    fsdp = resolve_config("iris-shapes", [*args, "parallel=fsdp"])
    with pytest.raises(ValueError, match="parallel"):  # a changed setting is refused unless allowed
        GRPOTrainer(fsdp, tmp_path / "mixed", progress=False).train()
    GRPOTrainer(fsdp, tmp_path / "mixed", progress=False, allow_config_change=True).train()
    _assert_same_checkpoint(tmp_path / "straight", tmp_path / "mixed", 2)  # optimizer moments restored sharded


# ---- what cannot be sharded -------------------------------------------------------------------------------


class _Toy:
    name = "toy"

    def __init__(self, units: str) -> None:
        import torch

        self.model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Sequential(torch.nn.Linear(4, 4)))
        self._units = units

    def fsdp_units(self) -> list:
        if self._units == "loose":
            return [self.model[0]]
        return [self.model[1], self.model[1][0]]  # nested


def test_sharding_errors_name_the_problem() -> None:
    with pytest.raises(ShardingError, match="no fsdp_units"):
        shard(type("Bare", (), {"name": "bare", "model": None})())
    with pytest.raises(ShardingError, match=r"outside every FSDP unit: \['1\.0\.weight', '1\.0\.bias'\]"):
        shard(_Toy("loose"))
    with pytest.raises(ShardingError, match="must not nest"):
        shard(_Toy("nested"))


def test_parallel_must_be_a_known_mode() -> None:
    from irisbench.train.config import ConfigError

    with pytest.raises(ConfigError, match="parallel must be one of ddp, fsdp"):
        resolve_config("iris-shapes", ["parallel=zero3"]).check()


# ---- two processes ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_fsdp_processes_equal_one_ddp_process_with_resume_and_sharded_evaluation(tiny_policy_dir: Path,
                                                                                     tmp_path: Path) -> None:
    args = [f"policy={tiny_policy_dir}", *SHAPES_ARGS, "eval_every=2", "eval_prompts=6", "eval_images_per_prompt=1"]
    # bnpo normalises per micro-batch: one process with 2 micro-batches = two processes with one each
    one = GRPOTrainer(resolve_config("iris-shapes", [*args, "gradient_accumulation_steps=2"]), tmp_path / "one",
                      progress=False)
    one.train()
    # the sharded run stops after step 1 and resumes from its checkpoint (sharded optimizer state restored)
    first = [a if a != "steps=2" else "steps=1" for a in args]
    torchrun_train(tmp_path, tmp_path / "two", "iris-shapes", [*first, "parallel=fsdp"])
    torchrun_train(tmp_path, tmp_path / "two", "iris-shapes", [*args, "parallel=fsdp"], allow_config_change=True)
    assert close(grads(one), np.load(tmp_path / "two" / "g0.npy"))  # the last step's summed gradient
    for step in (1, 2):
        _assert_same_checkpoint(tmp_path / "one", tmp_path / "two", step)
    _assert_same_metrics(tmp_path / "one", tmp_path / "two",
                         ("loss", "reward_mean", "reward_std", "grad_norm", "train_correct", "plan_len", "sc_image"))
    # the in-training evaluation ran on both ranks (prompts sharded) and matches the one-process one
    evals = [tmp_path / run / "eval" / "val" / "step-2" for run in ("one", "two")]
    ra, rb = ([json.loads(x) for x in (e / "records.jsonl").read_text().splitlines()] for e in evals)
    key = lambda r: (r["prompt_index"], r["sample_index"])  # noqa: E731
    ra, rb = sorted(ra, key=key), sorted(rb, key=key)
    assert [key(r) for r in ra] == [key(r) for r in rb] and len(ra) == 6
    assert [r["plan"] for r in ra] == [r["plan"] for r in rb]
    assert [r["sc_image"] for r in ra] == pytest.approx([r["sc_image"] for r in rb], rel=1e-5)
    assert json.loads((evals[1] / "results.json").read_text())["counts"]["processes"] == 2


@pytest.mark.slow
def test_two_fsdp_processes_train_a_tiny_janus_like_one_ddp_process(tiny_janus: tuple[Path, Path],
                                                                    tmp_path: Path) -> None:
    folder, prompts = tiny_janus
    args = _janus_args(folder, prompts)
    one = GRPOTrainer(resolve_config("janus-pro-1b-iris", [*args, "gradient_accumulation_steps=2"]), tmp_path / "one",
                      progress=False)
    one.train()
    torchrun_train(tmp_path, tmp_path / "two", "janus-pro-1b-iris", [*args, "parallel=fsdp"])
    assert close(grads(one), np.load(tmp_path / "two" / "g0.npy"))
    for step in (1, 2):
        _assert_same_checkpoint(tmp_path / "one", tmp_path / "two", step)
    _assert_same_metrics(tmp_path / "one", tmp_path / "two", ("loss", "kl", "reward_mean", "grad_norm"))


@pytest.mark.slow
def test_the_train_command_runs_under_torchrun(tiny_policy_dir: Path, tmp_path: Path) -> None:
    """The CLI itself under a launcher: one run folder, one summary, a clean exit; --out is required."""
    torchrun = Path(sys.executable).with_name("torchrun")
    sets = [f"policy={tiny_policy_dir}", "steps=1", "prompts_per_step=2", "num_generations=2", "eval_every=0",
            "parallel=fsdp", "num_threads=1"]
    args = ["train", "--no-progress", *[x for s in sets for x in ("--set", s)]]

    def launch(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "irisbench", *args, *extra],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})

    proc = launch("--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("last checkpoint") == 1  # printed by rank 0 only
    assert (tmp_path / "run" / "checkpoints" / "step-1" / "model.safetensors").is_file()
    assert len(read_metrics(tmp_path / "run")) == 1
    proc = launch()
    assert proc.returncode != 0 and "pass --out" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())
