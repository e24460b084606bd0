"""The GPU path (``pytest -m gpu``; skipped without CUDA by conftest): the CPU tests' claims, on ``cuda``.

Mirrors tests/test_janus.py (loops vs transformers, teacher forcing, static and compiled decoding),
tests/test_trainer.py (GRPO with either ``logp_source``), tests/test_sharding.py (FSDP, one process) and
tests/test_evaluate.py (records independent of the batch size), with every model on ``cuda:0``. Parity
checks run in fp32 (argmax parity of two loops is meaningful there; bf16 is compared on logits, with the
tolerance ``benchmarks/bench_janus.py`` justifies). Written without a GPU at hand: run ``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from janus_tiny import GRID, build_tiny_janus  # noqa: E402

from irisbench.policies.janus import JanusPolicy, cot_request, image_request  # noqa: E402
from irisbench.policies.janus_decode import _left_pad, sample_image_tokens, sample_text  # noqa: E402

pytestmark = pytest.mark.gpu
PROMPTS = ["a photo of a red cube", "two green cats above a blue sphere to the left of a dog", "a star"]
CUDA = "cuda"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_janus(tmp_path_factory.mktemp("janus_gpu") / "tiny")


@pytest.fixture(scope="module")
def policy(ckpt: Path) -> JanusPolicy:
    pol = JanusPolicy.from_pretrained(ckpt, device=CUDA, dtype="float32", cot_max_new_tokens=6)
    assert pol.device.type == "cuda" and pol.model.dtype == torch.float32
    return pol


def _image_ids(pol: JanusPolicy) -> list[list[int]]:
    return [pol.encode(image_request(p)) + [pol.boi_id] for p in PROMPTS]


def test_default_janus_dtype_on_cuda_is_bf16(ckpt: Path) -> None:
    pol = JanusPolicy.from_pretrained(ckpt, device=CUDA, cot_max_new_tokens=2)
    assert pol.model.dtype == torch.bfloat16 and str(pol.device) == "cuda:0"
    r = pol.sample(PROMPTS[:1], n=2, seed=0)
    assert r.tokens.shape[0] == 2 and np.isfinite(r.self_certainty[r.token_mask]).all()


@pytest.mark.parametrize("decode", ["eager", "static", "compiled"])
def test_image_loop_greedy_equals_hf_generate_on_cuda(policy: JanusPolicy, decode: str) -> None:
    out = sample_image_tokens(policy.model, _image_ids(policy), policy._generators([1, 2, 3]),
                              num_tokens=GRID * GRID, cfg=5.0, bos_id=policy.bos_id, boi_id=policy.boi_id,
                              pad_id=policy.pad_id, top_k=1, decode=decode)
    batch = policy.processor(text=[image_request(p) for p in PROMPTS], generation_mode="image",
                             return_tensors="pt", padding=True).to(policy.device)
    hf = policy.model.generate(**batch, generation_mode="image", do_sample=False, guidance_scale=5.0)
    assert out.tokens.device.type == "cpu"  # loop outputs come back to the CPU
    assert torch.equal(out.tokens, hf.cpu())


@pytest.mark.parametrize("decode", ["static", "compiled"])
def test_fixed_shape_decoding_equals_the_eager_loop_on_cuda(policy: JanusPolicy, decode: str) -> None:
    kw = dict(num_tokens=GRID * GRID, cfg=3.0, bos_id=policy.bos_id, boi_id=policy.boi_id, pad_id=policy.pad_id,
              temperature=0.9, top_k=20, keep_logits=True)
    eager = sample_image_tokens(policy.model, _image_ids(policy), policy._generators([5, 6, 7]), **kw)
    fixed = sample_image_tokens(policy.model, _image_ids(policy), policy._generators([5, 6, 7]), decode=decode, **kw)
    assert torch.equal(fixed.tokens, eager.tokens)
    for field in ("logp", "self_certainty", "entropy"):
        torch.testing.assert_close(getattr(fixed, field), getattr(eager, field), rtol=0, atol=1e-4)
    ids = [policy.encode(cot_request(p)) for p in PROMPTS]
    tk = dict(max_new_tokens=8, eos_id=policy.eos_id, pad_id=policy.pad_id, top_k=1)
    a = sample_text(policy.model, ids, policy._generators([1, 2, 3]), **tk)
    b = sample_text(policy.model, ids, policy._generators([1, 2, 3]), decode=decode, **tk)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)


def test_text_loop_greedy_equals_hf_generate_on_cuda(policy: JanusPolicy) -> None:
    ids = [policy.encode(cot_request(p)) for p in PROMPTS]
    padded, mask = _left_pad(ids, policy.pad_id, policy.device)
    hf = policy.model.generate(input_ids=padded, attention_mask=mask, generation_mode="text", do_sample=False,
                               max_new_tokens=10, eos_token_id=policy.eos_id, pad_token_id=policy.pad_id)
    mine = sample_text(policy.model, ids, policy._generators([4, 5, 6]), max_new_tokens=10, eos_id=policy.eos_id,
                       pad_id=policy.pad_id, top_k=1)
    assert torch.equal(mine.tokens, hf[:, padded.shape[1]:].cpu())


def test_teacher_forced_statistics_equal_the_loops_on_cuda(policy: JanusPolicy) -> None:
    r = policy.sample(PROMPTS[:2], n=2, seed=3, cfg=5.0, temperature=0.7, top_k=30)
    with torch.no_grad():
        tf = policy.token_logits(r)
    assert tf.logp.device.type == "cuda"
    mask = r.token_mask
    for field in ("logp", "self_certainty", "entropy"):
        got = getattr(tf, field).detach().cpu().numpy()[mask]
        np.testing.assert_allclose(got, getattr(r, field)[mask], atol=1e-4, err_msg=field)
    # the chunked statistics and activation checkpointing give the same values and gradients on cuda
    chunked = JanusPolicy(policy.model, policy.processor, logits_chunk=7, gradient_checkpointing=True,
                          cot_max_new_tokens=6)
    grads = []
    for p in (policy, chunked):
        p.model.zero_grad(set_to_none=True)
        out = p.token_logits(r)
        out.logp[out.mask].sum().backward()
        grads.append(torch.cat([q.grad.flatten() for q in p.model.model.language_model.parameters()
                                if q.grad is not None]))
    policy.model.zero_grad(set_to_none=True)
    assert float((grads[0] - grads[1]).abs().max()) <= 1e-4 * float(grads[0].abs().max())


def test_same_sample_whatever_the_batch_on_cuda(ckpt: Path) -> None:
    pol = JanusPolicy.from_pretrained(ckpt, device=CUDA, dtype="float32", cot_max_new_tokens=6)
    big = pol.sample(PROMPTS[:2], n=2, seed=[11, 12, 13, 14])
    pol.batch_size = 3
    chunked = pol.sample(PROMPTS[:2], n=2, seed=[11, 12, 13, 14])
    np.testing.assert_array_equal(chunked.tokens, big.tokens)
    np.testing.assert_array_equal(np.stack(chunked.images), np.stack(big.images))
    alone = pol.sample([PROMPTS[1]], n=1, seed=[13])
    n = int(alone.token_mask[0].sum())
    np.testing.assert_array_equal(big.tokens[2, :n], alone.tokens[0, :n])


def test_eval_records_do_not_depend_on_batch_size_on_cuda(tmp_path: Path) -> None:
    from irisbench.evaluation.evaluate import EvalOptions, evaluate

    def records(run: Path) -> list[dict]:
        rows = [json.loads(x) for x in (run / "records.jsonl").read_text().splitlines() if x.strip()]
        return sorted(rows, key=lambda r: (r["prompt_index"], r["sample_index"]))

    for policy in ("shapes-base", "random"):
        a = evaluate(EvalOptions(policy=policy, limit=6, batch_size=3, save_images=False, device=CUDA),
                     tmp_path / f"{policy}-a", progress=False)
        evaluate(EvalOptions(policy=policy, limit=6, batch_size=64, save_images=False, device=CUDA),
                 tmp_path / f"{policy}-b", progress=False)
        ra, rb = records(tmp_path / f"{policy}-a"), records(tmp_path / f"{policy}-b")
        assert len(ra) == len(rb) == 6 * a["images_per_prompt"]
        for x, y in zip(ra, rb, strict=True):  # samples exactly; statistics to float rounding (as on the CPU)
            floats = {k for k, v in x.items() if isinstance(v, float)}
            assert {k: v for k, v in x.items() if k not in floats} == {k: v for k, v in y.items() if k not in floats}
            for k in floats:
                assert x[k] == pytest.approx(y[k], rel=1e-4, abs=1e-4), k
        env = json.loads((tmp_path / f"{policy}-a" / "env.json").read_text())
        assert env["device"] == "cuda:0" and env["gpu"]
        assert a["counts"]["complete"]


def test_shapes_loops_agree_on_cuda() -> None:
    """The shapes LM's reference loop (transformers' forward) and fast loop on ``cuda``: both build every
    tensor on the model's device and return CPU results; on the GPU they agree to round-off (the same plans
    and tokens for nearly every row; a flip needs a uniform within ~1e-5 of a CDF step)."""
    from irisbench.policies.shapes_lm import SHIPPED_BASE, ShapesLMPolicy

    pol = ShapesLMPolicy.load(SHIPPED_BASE, device=CUDA)
    assert pol.device.type == "cuda"
    prompts = ["a photo of a red circle", "a photo of three squares", "a photo of a diamond left of a triangle",
               "a photo of an orange diamond and a white circle"]
    ref = pol.generate(prompts, n=4, seed=3, fast=False)
    new = pol.generate(prompts, n=4, seed=3)
    same = (ref.tokens == new.tokens).all(1)
    assert same.mean() >= 0.8, same
    m = ref.token_mask[same]
    np.testing.assert_allclose(ref.self_certainty[same][m], new.self_certainty[same][m], atol=1e-3)
    assert len(ref.images) == len(new.images) == 16


def _janus_cfg(folder: Path, prompts: Path, *extra: str):
    from irisbench.train.config import resolve_config

    return resolve_config("janus-pro-1b-iris", [f"model={folder}", f"prompts_file={prompts}", "steps=2",
                                                "prompts_per_step=2", "num_generations=2",
                                                "gradient_accumulation_steps=1", "checkpoint_every=1", "cfg=2.0",
                                                "lr=1e-3", "policy_options={dtype: float32, logits_chunk: 7}",
                                                *extra])


@pytest.mark.parametrize("logp_source", ["conditional", "guided"])
def test_grpo_steps_a_tiny_janus_on_cuda(ckpt: Path, tmp_path: Path, logp_source: str) -> None:
    from irisbench.train.trainer import GRPOTrainer, read_metrics

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red apple on a table\ntwo cats\nthree blue cups\n")
    trainer = GRPOTrainer(_janus_cfg(ckpt, prompts, f"logp_source={logp_source}", "beta=0.01"), tmp_path / "run",
                          progress=False, device=CUDA)
    trainer.train()
    assert all(p.device.type == "cuda" for p in trainer.policy.model.parameters())
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == 2 and all(np.isfinite(r["loss"]) and np.isfinite(r["grad_norm"]) for r in rows)
    assert json.loads((tmp_path / "run" / "env.json").read_text())["device"] == "cuda:0"
    # resuming on the GPU finds the checkpoint and has nothing left to do
    again = GRPOTrainer(_janus_cfg(ckpt, prompts, f"logp_source={logp_source}", "beta=0.01"), tmp_path / "run",
                        progress=False, device=CUDA)
    assert again.train().name == "step-2"


def test_fsdp_one_process_equals_replicated_on_cuda(ckpt: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file
    from torch.distributed.tensor import DTensor

    from irisbench.train.trainer import GRPOTrainer

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red apple on a table\ntwo cats\nthree blue cups\n")
    GRPOTrainer(_janus_cfg(ckpt, prompts), tmp_path / "ddp", progress=False, device=CUDA).train()
    fsdp = GRPOTrainer(_janus_cfg(ckpt, prompts, "parallel=fsdp"), tmp_path / "fsdp", progress=False, device=CUDA)
    fsdp.train()
    assert all(isinstance(p, DTensor) for p in fsdp.policy.model.parameters())
    for step in (1, 2):
        a = load_file(str(tmp_path / "ddp" / "checkpoints" / f"step-{step}" / "model.safetensors"))
        b = load_file(str(tmp_path / "fsdp" / "checkpoints" / f"step-{step}" / "model.safetensors"))
        assert sorted(a) == sorted(b)
        for key in a:  # Adam moves an element by about lr = 1e-3 at most per step
            assert float(np.abs(a[key] - b[key]).max()) <= 1e-3 * step, key


def test_device_errors_on_a_gpu_host() -> None:
    from irisbench.core.devices import DeviceError, resolve_device

    n = torch.cuda.device_count()
    assert resolve_device("cuda") == f"cuda:{torch.cuda.current_device()}"
    with pytest.raises(DeviceError, match=f"only {n} GPU"):
        resolve_device(f"cuda:{n}")
