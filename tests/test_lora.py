"""LoRA through peft (irisbench.policies.lora): only adapters train, merged = unmerged, the KL reference shares
the base weights, adapters round-trip through checkpoints and ``--policy``, bad input is one line."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from irisbench.cli import app
from irisbench.policies import load_policy
from irisbench.policies.lora import LoraError, LoraPolicy, LoraSettings, attach_lora
from irisbench.train.config import ConfigError, resolve_config
from irisbench.train.trainer import GRPOTrainer, read_metrics

sys.path.insert(0, str(Path(__file__).parent))
pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
TOL = 1e-5  # fp32: merged W + s B A against x W^T + s (x A^T) B^T; shapes LM: largest gap seen ~1e-6
JANUS_TOL = 1e-4  # the tiny Janus's weights (std 0.25) give log-probs down to ~-40: gaps ~3e-5 (~1e-6 relative)


def _args(policy: Path, *extra: str) -> list[str]:
    return [f"policy={policy}", "steps=2", "prompts_per_step=2", "num_generations=4", "eval_every=0",
            "checkpoint_every=1", "lr=1e-2", "num_threads=1", "lora={r: 4, alpha: 8}", *extra]


def _randomise_b(lora: LoraPolicy, seed: int = 1) -> None:
    """B starts at 0 (the adapted policy starts as the base); give it values so the adapters matter."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in lora.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _rollout(policy, n: int = 2):
    return policy.sample(["a photo of a red square", "a photo of two blue circles"], n=n, seed=3)


def test_defaults_and_strict_config() -> None:
    s = LoraSettings.from_config({})
    assert (s.r, s.alpha, s.dropout, s.scaling) == (16, 32.0, 0.05, 2.0)
    assert s.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert resolve_config("iris-shapes").lora is None  # absent: full fine-tuning
    with pytest.raises(LoraError, match="unknown key 'rank'"):
        resolve_config("iris-shapes", ["lora={rank: 8}"])
    with pytest.raises(LoraError, match="lora.r must be an integer"):
        resolve_config("iris-shapes", ["lora.r=0"])
    with pytest.raises(ConfigError, match="parallel=ddp"):
        resolve_config("iris-shapes", ["lora={}", "parallel=fsdp"])
    cfg = resolve_config("verifier-shapes-lora")
    assert cfg.lora is not None and cfg.reward == "verifier" and LoraSettings.from_config(cfg.lora).r == 16
    assert resolve_config("janus-pro-7b-iris-lora").parallel == "ddp"


def test_only_adapter_weights_change_in_a_step(tiny_policy_dir: Path, tmp_path: Path) -> None:
    base = load_policy(str(tiny_policy_dir))
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    trainer = GRPOTrainer(resolve_config("iris-shapes", _args(tiny_policy_dir, "steps=1", "beta=0.1")),
                          tmp_path / "run", progress=False, policy=base)
    trainer.train()
    after = trainer.policy.model.state_dict()
    lora = {k: v for k, v in after.items() if "lora_" in k}
    assert lora and all(k.endswith(".weight") for k in lora)
    assert len(lora) == 2 * 7  # A and B of the 7 projections of the one decoder block
    for k, v in after.items():
        if "lora_" not in k:
            assert np.array_equal(v.numpy(), before[k.replace(".base_layer", "")].numpy()), k
    assert all(float(v.abs().max()) > 0 for k, v in lora.items() if "lora_B" in k)  # B left 0: they moved
    trainable = {n for n, p in trainer.policy.model.named_parameters() if p.requires_grad}
    assert trainable == {k for k in lora}
    assert trainer.optimizer.param_groups[0]["params"].__len__() == len(lora)


def test_kl_reference_is_the_base_without_a_second_copy(tiny_policy_dir: Path, tmp_path: Path) -> None:
    import torch

    trainer = GRPOTrainer(resolve_config("iris-shapes", _args(tiny_policy_dir, "steps=1", "beta=0.1")),
                          tmp_path / "run", progress=False)
    trainer.train()
    assert trainer.ref is not None and trainer.ref.model is trainer.policy.model
    ptrs = {p.data_ptr() for p in trainer.policy.model.parameters()}
    ref_ptrs = {p.data_ptr() for p in trainer.ref.model.parameters()}
    assert ref_ptrs == ptrs  # one set of storages; the base weights exist once
    assert not (tmp_path / "run" / "checkpoints" / "reference").exists()
    # the reference's numbers are the base model's (a fresh load), bit for bit
    rollout = _rollout(trainer.policy)
    with torch.no_grad():
        ref = trainer.ref.token_logits(rollout).logp
        fresh = load_policy(str(tiny_policy_dir)).token_logits(rollout).logp
        adapted = trainer.policy.token_logits(rollout).logp
    assert torch.equal(ref, fresh)
    assert not torch.equal(adapted, fresh)  # one step moved the adapted policy away from it
    assert read_metrics(tmp_path / "run")[0]["kl"] == 0.0  # step 1: policy = base (B = 0)


def test_merged_equals_unmerged_and_adapters_round_trip(tiny_policy_dir: Path, tmp_path: Path) -> None:
    import torch

    lora = attach_lora(load_policy(str(tiny_policy_dir)), LoraSettings(r=4, alpha=8),
                       base={"policy": str(tiny_policy_dir), "model": None, "policy_options": {}})
    lora.peft.peft_config["default"].base_model_name_or_path = "shapes-base"  # a name peft could look up
    _randomise_b(lora)
    rollout = _rollout(lora)  # adapters unmerged: the fast loop reads W + s B A
    slow = lora.generate(["a photo of a red square", "a photo of two blue circles"], n=2, seed=3, fast=False)
    assert np.array_equal(slow.tokens, rollout.tokens)  # the reference loop runs the peft layers themselves
    assert float(np.abs(slow.logp - rollout.logp).max()) < TOL
    with torch.no_grad():
        unmerged = lora.token_logits(rollout)
        base = lora.reference().token_logits(rollout)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folder = lora.save(tmp_path / "adapter")
    assert not caught, [str(w.message) for w in caught]  # e.g. peft looking the base up on the Hub
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in folder.iterdir()}
    assert not (folder / "model.safetensors").exists()
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8 and config["peft_type"] == "LORA"
    loaded = load_policy(str(folder))  # base + adapters, merged for evaluation
    assert isinstance(loaded, LoraPolicy) and loaded.merged
    assert not any("lora_" in n for n, _ in loaded.model.named_parameters())
    with torch.no_grad():
        merged = loaded.token_logits(rollout)
    gap = float((merged.parts["image_logits"] - unmerged.parts["image_logits"]).abs().max())
    assert gap < TOL
    assert float((merged.logp - unmerged.logp).abs().max()) < TOL
    assert float((base.logp - unmerged.logp).abs().max()) > 1e-2  # the adapters change the numbers
    # sampling from the merged model draws the same tokens, with the same statistics up to round-off
    again = loaded.sample(["a photo of a red square", "a photo of two blue circles"], n=2, seed=3)
    assert np.array_equal(again.tokens, rollout.tokens) and float(np.abs(again.logp - rollout.logp).max()) < TOL
    assert loaded.describe()["lora"]["merged"] is True


def test_resume_continues_the_adapters(tiny_policy_dir: Path, tmp_path: Path) -> None:
    args = _args(tiny_policy_dir, "steps=3", "beta=0.05", "lora={r: 4, alpha: 8, dropout: 0.1}")
    GRPOTrainer(resolve_config("iris-shapes", args), tmp_path / "whole", progress=False).train()
    stop = [a if a != "steps=3" else "steps=1" for a in args]
    GRPOTrainer(resolve_config("iris-shapes", stop), tmp_path / "cut", progress=False).train()
    GRPOTrainer(resolve_config("iris-shapes", args), tmp_path / "cut", progress=False,
                allow_config_change=True).train()
    a, b = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "cut")
    assert [r["step"] for r in b] == [1, 2, 3]
    for x, y in zip(a, b, strict=True):
        for k in ("loss", "kl", "reward_mean", "grad_norm"):
            assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-9), (x["step"], k)
    from safetensors.numpy import load_file

    wa = load_file(str(tmp_path / "whole" / "checkpoints" / "step-3" / "adapter_model.safetensors"))
    wb = load_file(str(tmp_path / "cut" / "checkpoints" / "step-3" / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys() and all(np.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_bad_target_module_is_one_line(tiny_policy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = resolve_config("iris-shapes", _args(tiny_policy_dir, "lora={target_modules: [q_proj, qkv]}"))
    with pytest.raises(LoraError, match=r"'qkv' is not a linear layer .*candidates: down_proj, gate_proj, k_proj"):
        GRPOTrainer(cfg, tmp_path / "run", progress=False).train()
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["train", "-c", "iris-shapes", "--set", f"policy={tiny_policy_dir}",
                              "--set", "lora={target_modules: [attn]}", "--set", "steps=1"])
    assert res.exit_code == 2 and "'attn' is not a linear layer" in res.output
    assert "Traceback" not in res.output
    runs = tmp_path / "results" / "runs"  # the default run folder it reserved is gone again
    assert not runs.exists() or not any(runs.iterdir())


def test_adapter_on_another_base_is_refused(tiny_policy_dir: Path, tmp_path: Path) -> None:
    from irisbench.policies.shapes_lm import ShapesLMPolicy

    lora = attach_lora(load_policy(str(tiny_policy_dir)), LoraSettings(r=2),
                       base={"policy": str(tiny_policy_dir), "model": None, "policy_options": {}})
    folder = lora.save(tmp_path / "adapter")
    base = ShapesLMPolicy.load(tiny_policy_dir)
    other = ShapesLMPolicy.create(base.image_tokenizer, hidden_size=32, num_layers=1, num_heads=2,
                                  intermediate_size=64, seed=5)  # same shapes, other weights
    other.save(tmp_path / "other")
    assert isinstance(load_policy(str(folder), str(tiny_policy_dir)), LoraPolicy)  # its own base: fine
    with pytest.raises(LoraError, match="other weights in the targeted layers"):
        load_policy(str(folder), str(tmp_path / "other"))
    ok = runner.invoke(app, ["eval", "--policy", str(folder), "--limit", "1", "--out", str(tmp_path / "ok")])
    assert ok.exit_code == 0, ok.output
    record = json.loads((tmp_path / "ok" / "results.json").read_text())["policy"]["lora"]
    assert record["adapter"] == str(folder) and record["merged"] and record["r"] == 2
    res = runner.invoke(app, ["eval", "--policy", str(folder), "--model", str(tmp_path / "other"),
                              "--limit", "1", "--out", str(tmp_path / "ev")])
    assert res.exit_code == 2 and "fingerprint" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "ev" / "results.json").exists()


def test_janus_lora_adapts_the_language_model_only(tmp_path: Path) -> None:
    import torch
    from janus_tiny import build_tiny_janus

    folder = build_tiny_janus(tmp_path / "janus")
    prompts = tmp_path / "train_prompts.txt"
    prompts.write_text("a red apple on a table\ntwo cats\n")
    cfg = resolve_config("janus-pro-1b-iris", [f"model={folder}", f"prompts_file={prompts}", "steps=1",
                                               "prompts_per_step=1", "num_generations=2", "checkpoint_every=1",
                                               "gradient_accumulation_steps=1", "cfg=2.0", "lr=1e-2",
                                               "num_threads=1", "lora={}", "policy_options={}"])
    trainer = GRPOTrainer(cfg, tmp_path / "run", progress=False)
    before = {k: v.clone() for k, v in load_policy("janus-pro", str(folder)).model.state_dict().items()}
    trainer.train()
    model = trainer.policy.model
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in model.named_parameters() if ".lora_A." in n}
    assert adapted and all(n.startswith("model.language_model.layers.") for n in adapted)
    assert len(adapted) == 2 * 7  # two blocks x seven projections; SigLIP's q/k/v untouched
    for k, v in model.state_dict().items():
        if "lora_" not in k:
            assert torch.equal(v, before[k.replace(".base_layer", "")]), k
    # merged (as loaded for eval) = unmerged on the teacher-forced image and text statistics
    lora = trainer.policy
    _randomise_b(lora)
    rollout = lora.sample(["a red apple"], n=2, seed=1)
    with torch.no_grad():
        unmerged = lora.token_logits(rollout)
        base = lora.reference().token_logits(rollout)
        lora.save(tmp_path / "adapter")
        merged = load_policy(str(tmp_path / "adapter")).token_logits(rollout)
    assert float((merged.logp - unmerged.logp).abs().max()) < JANUS_TOL
    assert float((merged.self_certainty - unmerged.self_certainty).abs().max()) < JANUS_TOL
    assert float((base.logp - unmerged.logp).abs().max()) > 1e-2  # the adapters change the numbers


def test_adapter_dropout_runs_only_where_gradients_are_on(tiny_policy_dir: Path) -> None:
    import torch

    lora = attach_lora(load_policy(str(tiny_policy_dir)), LoraSettings(r=4, dropout=0.5),
                       base={"policy": str(tiny_policy_dir), "model": None, "policy_options": {}})
    _randomise_b(lora)
    rollout = _rollout(lora)
    assert not lora.model.training  # the policy stays in eval mode
    with torch.no_grad():
        a, b = lora.token_logits(rollout).logp, lora.token_logits(rollout).logp
    assert torch.equal(a, b)
    c, d = lora.token_logits(rollout).logp.detach(), lora.token_logits(rollout).logp.detach()
    assert not torch.equal(c, d) and not torch.equal(a, c)  # two gradient passes, two dropout masks
