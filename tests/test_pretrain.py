"""Pretraining of the shapes base: batches, schedule, checkpoints without pickle, exact resume."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

from irisbench.policies.shapes_lm import ShapesLMPolicy, ShapesVocab
from irisbench.protocols.geneval import judge
from irisbench.train.pretrain import (
    BatchMaker,
    PretrainConfig,
    PretrainError,
    batch_loss,
    build_scheduler,
    complete_checkpoints,
    resolve_precision,
    run_pretrain,
)
from irisbench.world.detector import detect
from irisbench.world.tokenizer import PatchTokenizer, theoretical_patches

TINY = PretrainConfig(steps=3, batch_size=4, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                      warmup_steps=1, tokenizer_scenes=200, checkpoint_every=2, log_every=1,
                      num_threads=1)



pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


def test_lr_schedule_by_hand() -> None:
    """transformers' cosine_with_min_lr: the former hand-written schedule's cosine exactly; its warmup starts
    one step lower (s / w, transformers' convention, where the former one ran (s + 1) / w)."""
    import torch

    cfg = PretrainConfig(steps=110, warmup_steps=10, min_lr_ratio=0.1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = build_scheduler(opt, cfg)
    seen = []
    for _ in range(cfg.steps):
        seen.append(opt.param_groups[0]["lr"] / 2.0)
        opt.step()
        sched.step()

    def former(s: int) -> float:  # the hand-written schedule this replaced
        if s < 10:
            return (s + 1) / 10
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min((s - 10) / 100, 1.0)))

    assert seen[0] == 0.0 and seen[9] == pytest.approx(0.9)
    assert seen[:10] == pytest.approx([former(s - 1) if s else 0.0 for s in range(10)])
    assert seen[10:] == pytest.approx([former(s) for s in range(10, 110)])
    assert seen[10] == pytest.approx(1.0) and seen[60] == pytest.approx(0.1 + 0.9 * 0.5)  # half way through
    assert seen[35] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert sched.lr_lambdas[0](110) == pytest.approx(0.1)  # the floor at ``steps``


@pytest.mark.parametrize("change, match", [({"steps": 0}, "steps"), ({"lr": 0.0}, "lr"),
                                           ({"hidden_size": 30, "num_heads": 4}, "divisible"),
                                           ({"precision": "fp8"}, "precision"), ({"uncond_prob": 1.0}, "uncond")])
def test_config_errors(change: dict, match: str) -> None:
    with pytest.raises(PretrainError, match=match):
        replace(TINY, **change).check()
    with pytest.raises(PretrainError, match="bogus"):
        PretrainConfig.from_dict({"bogus": 1})


def test_batches_are_rendered_scenes_with_plans() -> None:
    tok = PatchTokenizer(theoretical_patches())
    v = ShapesVocab.from_world(tok.codebook_size)
    cfg = replace(TINY, batch_size=24, uncond_prob=0.3)
    maker = BatchMaker(cfg, v, tok)
    seqs, targets = maker.sequences(5)
    assert maker.sequences(5) == (seqs, targets)  # a pure function of (seed, step)
    assert maker.sequences(6)[0] != seqs
    n_uncond = 0
    for s, t in zip(seqs, targets, strict=True):
        assert len(s) == len(t)
        codes = np.array(s[-64:]) - v.image_offset
        assert ((codes >= 0) & (codes < tok.codebook_size)).all() and t[-64:] == [1] * 64
        assert s[-65] == v.boi and t[-65] == 0 and s[0] == v.bos and t[0] == 0
        image = tok.decode(codes[None])[0]
        if s[1] == v.null:
            n_uncond += 1
            assert len(s) == 67
            continue
        bop = s.index(v.bop)
        prompt = v.decode_words(s[1:bop])
        assert t[: bop + 1] == [0] * (bop + 1)  # the prompt is given, never predicted
        plan = s[bop + 1 : -65]
        assert plan[-1] == v.eop and t[bop + 1 : -65] == [1] * len(plan)
        # the image satisfies its prompt, and the plan describes its objects
        from irisbench.world.prompts import parse_prompt

        dets = detect(image)
        assert judge(parse_prompt(prompt), dets).correct
        assert v.decode_words(plan).count(";") + 1 == len(dets)
    assert 0 < n_uncond < len(seqs)


def test_plan_dropout_empties_some_plans_and_zero_keeps_the_recipe() -> None:
    tok = PatchTokenizer(theoretical_patches())
    v = ShapesVocab.from_world(tok.codebook_size)
    base = BatchMaker(replace(TINY, batch_size=32, uncond_prob=0.0), v, tok).sequences(3)
    zero = BatchMaker(replace(TINY, batch_size=32, uncond_prob=0.0, plan_dropout=0.0), v, tok).sequences(3)
    assert zero == base  # plan_dropout=0 draws nothing: the shipped recipe's batches are unchanged
    seqs, targets = BatchMaker(replace(TINY, batch_size=32, uncond_prob=0.0, plan_dropout=0.5), v, tok).sequences(3)
    bare = 0
    for s, t, (s0, _) in zip(seqs, targets, zip(*base, strict=True), strict=True):
        assert s[-64:] == s0[-64:]  # the same scenes and images, only plans dropped
        bop = s.index(v.bop)
        if s[bop + 1] == v.eop:  # an empty plan: EOP right after BOP, and it is a target
            bare += 1
            assert s[bop + 2] == v.boi and t[bop + 1] == 1
        else:
            assert s == s0
    assert 0 < bare < len(seqs)
    with pytest.raises(PretrainError, match="plan_dropout"):
        replace(TINY, plan_dropout=1.5).check()


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


def test_pretrain_checkpoints_and_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = run_pretrain(TINY, tmp_path / "full", progress=False)
    assert full == tmp_path / "full" / "checkpoints" / "step-3"
    assert [s for s, _ in complete_checkpoints(tmp_path / "full")] == [2, 3]
    names = {p.name for p in full.iterdir()}
    assert {"config.json", "model.safetensors", "irisbench_policy.json", "image_tokenizer.safetensors",
            "optimizer.safetensors", "trainer_state.json"} <= names
    assert all(p.suffix in (".json", ".safetensors") or p.name == "README.md" for p in full.iterdir())  # no pickle
    card = ModelCard.load(full / "README.md")  # the model card: pretrained from scratch, no base model
    assert "pretraining" in card.data.tags and card.data.base_model is None and card.data.license == "apache-2.0"
    assert "- steps: 3 (of 3 planned)" in card.text
    state = json.loads((full / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["config"]["hidden_size"] == 32
    # the precision "auto" chose is recorded beside the recipe, with its reason
    chosen = resolve_precision("auto")
    assert state["config"]["precision"] == "auto"
    assert state["precision_used"] == {"precision": chosen[0], "reason": chosen[1]}
    recorded = json.loads((tmp_path / "full" / "pretrain_config.json").read_text())
    assert recorded["precision_used"]["precision"] == chosen[0]
    ShapesLMPolicy.load(full).sample(["a photo of a circle"], seed=0)  # a checkpoint is a policy folder

    # crash in the third step (after the step-2 checkpoint), then resume
    real = BatchMaker.tensors

    def crash(self: BatchMaker, step: int) -> dict:
        if step == 2:
            raise KeyboardInterrupt("simulated kill")
        return real(self, step)

    monkeypatch.setattr(BatchMaker, "tensors", crash)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(TINY, tmp_path / "cut", progress=False)
    assert [s for s, _ in complete_checkpoints(tmp_path / "cut")] == [2]
    # a half-written checkpoint (no trainer_state.json) is ignored
    (tmp_path / "cut" / "checkpoints" / "step-3").mkdir()
    monkeypatch.setattr(BatchMaker, "tensors", real)
    resumed = run_pretrain(TINY, tmp_path / "cut", progress=False)
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "cut")
    assert sorted(b) == [1, 2, 3]  # no duplicated or lost metric lines
    assert a == b  # bit-identical loss after resuming
    sa = ShapesLMPolicy.load(full).model.state_dict()
    sb = ShapesLMPolicy.load(resumed).model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_refuses_a_different_recipe(tmp_path: Path) -> None:
    cfg = replace(TINY, steps=2)
    run_pretrain(cfg, tmp_path, progress=False)
    with pytest.raises(PretrainError, match="lr"):
        run_pretrain(replace(cfg, lr=5e-4), tmp_path, progress=False)
    with pytest.raises(PretrainError, match="already holds checkpoints"):
        run_pretrain(cfg, tmp_path, resume=False, progress=False)
    # a finished run resumes to itself; bookkeeping-only changes are allowed
    again = run_pretrain(replace(cfg, log_every=5), tmp_path, progress=False)
    assert again.name == "step-2"


def test_keep_last_prunes_old_checkpoints(tmp_path: Path) -> None:
    run_pretrain(replace(TINY, checkpoint_every=1, keep_last=1), tmp_path, progress=False)
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [3]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-3"]


def _fake_cpu(monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool, amx: bool) -> None:
    from irisbench.core.provenance import ISA_VARS

    for name in ISA_VARS:  # a CPU whose math libraries are not held to a lower instruction set
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)


@pytest.mark.parametrize(("avx512_bf16", "amx", "expected"),
                         [(False, False, "fp32"), (True, False, "bf16"), (False, True, "bf16"), (True, True, "bf16")])
def test_auto_precision_follows_the_cpu(monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool, amx: bool,
                                        expected: str) -> None:
    _fake_cpu(monkeypatch, avx512_bf16, amx)
    chosen, why = resolve_precision("auto")
    assert chosen == expected
    assert why.startswith("auto: CPU ") and ("lacks" in why) == (expected == "fp32")
    # an explicit choice is kept whatever the CPU
    assert resolve_precision("bf16")[0] == "bf16" and resolve_precision("fp32")[0] == "fp32"


def test_auto_precision_falls_back_to_proc_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    import irisbench.core.devices as devices

    _fake_cpu(monkeypatch, True, True)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda cpuinfo=None: True)
    assert devices.cpu_bf16_native()[0] and resolve_precision("auto")[0] == "bf16"
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda cpuinfo=None: False)
    native, why = devices.cpu_bf16_native()
    assert not native and "/proc/cpuinfo" in why and resolve_precision("auto")[0] == "fp32"


def test_auto_precision_follows_an_instruction_set_held_below_avx512(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU with AMX whose math libraries are held to AVX2 (how an AVX2-only CPU is emulated) runs bf16
    emulated: auto picks fp32 and says why."""
    _fake_cpu(monkeypatch, True, True)
    assert resolve_precision("auto")[0] == "bf16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert resolve_precision("auto")[0] == "bf16"
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    chosen, why = resolve_precision("auto")
    assert chosen == "fp32" and "MKL_ENABLE_INSTRUCTIONS=AVX2 holds the math libraries below AVX-512" in why


def test_auto_precision_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cpu(monkeypatch, True, True)  # the CPU does not decide for a CUDA run
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "cuda:0")[0] == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda")[0] == "bf16"


def test_batch_loss_needs_a_resolved_precision() -> None:
    with pytest.raises(PretrainError, match="resolved precision"):
        batch_loss(None, {"input_ids": torch.zeros((1, 2), dtype=torch.long)}, "auto")
