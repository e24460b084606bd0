"""JanusPolicy on a tiny random Janus (tests/janus_tiny.py): parity with transformers, teacher forcing,
statistics, gradients, per-row seeds and input checks. Everything runs offline on the CPU in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from janus_tiny import CODEBOOK, GRID, build_tiny_janus  # noqa: E402

from irisbench.core.uncertainty import token_stats  # noqa: E402
from irisbench.policies.base import IMAGE, TEXT, Policy, TokenLogits, TrainablePolicy  # noqa: E402
from irisbench.policies.janus import (  # noqa: E402
    COT_SYSTEM_PROMPT,
    JanusCheckpointError,
    JanusPolicy,
    cot_request,
    freeze_for_rl,
    image_request,
)
from irisbench.policies.janus_decode import _left_pad, sample_image_tokens, sample_text  # noqa: E402

PROMPTS = ["a photo of a red cube", "two green cats above a blue sphere to the left of a dog", "a star"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_janus(tmp_path_factory.mktemp("janus") / "tiny")


@pytest.fixture(scope="module")
def policy(ckpt: Path) -> JanusPolicy:
    return JanusPolicy.from_pretrained(ckpt, cot_max_new_tokens=6)


def _image_ids(pol: JanusPolicy, prompts: list[str]) -> list[list[int]]:
    return [pol.encode(image_request(p)) + [pol.boi_id] for p in prompts]


def _reference_stats(logits: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, ...]:
    """float64 numpy: log-prob of the token, logsumexp - mean, entropy."""
    z = logits.astype(np.float64)
    mx = z.max(-1, keepdims=True)
    lse = (mx + np.log(np.exp(z - mx).sum(-1, keepdims=True)))[..., 0]
    logp_all = z - lse[..., None]
    logp = np.take_along_axis(logp_all, tokens[..., None], -1)[..., 0]
    return logp, lse - z.mean(-1), -(np.exp(logp_all) * logp_all).sum(-1)


# ----------------------------------------------------------------------------------- prompt format


def test_prompt_strings_follow_the_deepseek_template() -> None:
    assert image_request("  a red cube ") == "<|User|>: a red cube\n\n<|Assistant|>:"
    assert image_request("a red cube", " A red cube.") == "<|User|>: a red cube.  A red cube.\n\n<|Assistant|>:"
    cot = cot_request("a red cube")
    assert cot.startswith(COT_SYSTEM_PROMPT + "\n\n<|User|>: You are asked to generate an image based on this "
                          'prompt: "a red cube"\nProvide a brief, precise visualization')
    # the template strips the user content: the reasoning prompt's trailing space is gone
    assert cot.endswith("Output your visualization directly without explanation:\n\n<|Assistant|>:")
    assert "50 words or less" in cot


def test_encoded_image_prompt_equals_the_processor(policy: JanusPolicy) -> None:
    ids = _image_ids(policy, PROMPTS)
    batch = policy.processor(text=[image_request(p) for p in PROMPTS], generation_mode="image",
                             return_tensors="pt", padding=True)
    for row, mask, mine in zip(batch["input_ids"], batch["attention_mask"], ids, strict=True):
        assert row[mask.bool()].tolist() == mine
    assert mine[0] == policy.bos_id and mine[-1] == policy.boi_id and mine.count(policy.bos_id) == 1


# ----------------------------------------------------------------------------- parity with HF


class _CondHalf:
    """guidance_scale=1 crashes HF's image generate (doubled batch, no CFG processor): keep cond rows."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores[: scores.shape[0] // 2]


@pytest.mark.parametrize("cfg", [5.0, 1.0])
def test_image_loop_greedy_equals_hf_generate(policy: JanusPolicy, cfg: float) -> None:
    from transformers import LogitsProcessorList

    ids = _image_ids(policy, PROMPTS)  # three lengths: left padding is exercised
    out = sample_image_tokens(policy.model, ids, policy._generators([1, 2, 3]), num_tokens=GRID * GRID,
                              cfg=cfg, bos_id=policy.bos_id, boi_id=policy.boi_id, pad_id=policy.pad_id, top_k=1)
    batch = policy.processor(text=[image_request(p) for p in PROMPTS], generation_mode="image",
                             return_tensors="pt", padding=True).to(policy.device)  # processor outputs are CPU
    extra = {"logits_processor": LogitsProcessorList([_CondHalf()])} if cfg == 1.0 else {}
    hf = policy.model.generate(**batch, generation_mode="image", do_sample=False, guidance_scale=cfg,
                               **extra).cpu()
    assert out.tokens.shape == (3, GRID * GRID)
    assert torch.equal(out.tokens, hf)
    assert len(set(out.tokens.flatten().tolist())) > 8  # the tiny model's output is not degenerate


def test_text_loop_greedy_equals_hf_generate_and_stops_at_eos(policy: JanusPolicy) -> None:
    ids = [policy.encode(cot_request(p)) for p in PROMPTS]
    gens = policy._generators([4, 5, 6])
    padded, mask = _left_pad(ids, policy.pad_id, policy.device)

    def hf(eos: int) -> torch.Tensor:
        out = policy.model.generate(input_ids=padded, attention_mask=mask, generation_mode="text", do_sample=False,
                                    max_new_tokens=10, eos_token_id=eos, pad_token_id=policy.pad_id)
        return out[:, padded.shape[1]:].cpu()

    free = sample_text(policy.model, ids, gens, max_new_tokens=10, eos_id=policy.eos_id, pad_id=policy.pad_id,
                       top_k=1)
    assert free.mask.all() and torch.equal(free.tokens, hf(policy.eos_id))
    # declare row 0's 4th greedy token the EOS: row 0 must stop there, EOS included
    eos = int(free.tokens[0, 3])
    first = [int((row == eos).nonzero()[0]) if (row == eos).any() else 10 for row in free.tokens]
    stop = sample_text(policy.model, ids, gens, max_new_tokens=10, eos_id=eos, pad_id=policy.pad_id, top_k=1)
    ref = hf(eos)
    assert first[0] <= 3
    for r, f in enumerate(first):
        n = min(f + 1, 10)
        assert stop.mask[r].sum() == n and stop.mask[r, :n].all()
        assert torch.equal(stop.tokens[r, :n], ref[r, :n])
        assert torch.equal(stop.tokens[r, :n], free.tokens[r, :n])


# ---------------------------------------------------------------- teacher forcing and statistics


@pytest.fixture(scope="module")
def greedy_rollout(ckpt: Path):
    """cfg=1, greedy CoT and image tokens, row 0's CoT stopped early by a declared EOS (ragged text)."""
    pol = JanusPolicy.from_pretrained(ckpt, cot_max_new_tokens=6, cot_top_k=1, cfg=1.0, top_k=1)
    probe = pol.sample(PROMPTS[:1], n=1, seed=0)
    pol.eos_id = int(probe.tokens[0, 2])
    return pol, pol.sample(PROMPTS, n=1, seed=0)


def test_rollout_layout(greedy_rollout) -> None:
    pol, r = greedy_rollout
    lengths = r.extras["text_lengths"]
    assert lengths[0] <= 3 and r.tokens[0, lengths[0] - 1] == pol.eos_id and max(lengths) == 6
    assert r.tokens.shape == (3, 6 + GRID * GRID)
    for row, n in enumerate(lengths):
        assert (r.modality[row, :n] == TEXT).all() and (r.modality[row, n:n + GRID * GRID] == IMAGE).all()
        assert r.token_mask[row].sum() == n + GRID * GRID and not r.token_mask[row, n + GRID * GRID:].any()
        assert r.plans[row] == pol.tokenizer.decode(r.tokens[row, :n].tolist(), skip_special_tokens=True).strip()
        assert r.tokens[row, n:n + GRID * GRID].max() < CODEBOOK
        assert r.images[row].shape == (GRID * 2, GRID * 2, 3) and r.images[row].dtype == np.uint8
    assert r.settings["cfg"] == 1.0 and r.settings["stats_source"] == "conditional"
    summary = r.token_summary(0)
    assert summary["plan_len"] == lengths[0]
    assert summary["sc_image"] == pytest.approx(float(r.self_certainty[0, lengths[0]:lengths[0] + GRID * GRID].mean()))


def test_teacher_forced_logits_equal_the_loops(greedy_rollout) -> None:
    pol, r = greedy_rollout
    gens = pol._generators(r.seeds)
    img = sample_image_tokens(pol.model, r.extras["image_prompt_ids"], gens, num_tokens=GRID * GRID, cfg=1.0,
                              bos_id=pol.bos_id, boi_id=pol.boi_id, pad_id=pol.pad_id, top_k=1, keep_logits=True)
    txt = sample_text(pol.model, r.extras["cot_prompt_ids"], gens, max_new_tokens=6, eos_id=pol.eos_id,
                      pad_id=pol.pad_id, top_k=1, keep_logits=True)
    with torch.no_grad():
        tf = pol.part_logits(r)
    assert torch.equal(tf["image_tokens"], img.tokens)
    assert float((tf["image"] - img.logits).abs().max()) < 1e-4
    assert torch.equal(tf["text_mask"], txt.mask)
    assert torch.equal(tf["text_tokens"][tf["text_mask"]], txt.tokens[txt.mask])
    assert float((tf["text"] - txt.logits)[tf["text_mask"]].abs().max()) < 1e-4


def test_statistics_equal_a_direct_computation(policy: JanusPolicy) -> None:
    ids = _image_ids(policy, PROMPTS)
    kw = dict(num_tokens=GRID * GRID, cfg=3.0, bos_id=policy.bos_id, boi_id=policy.boi_id, pad_id=policy.pad_id,
              temperature=0.8, top_k=20, keep_logits=True)
    cond = sample_image_tokens(policy.model, ids, policy._generators([7, 8, 9]), **kw)
    guided = sample_image_tokens(policy.model, ids, policy._generators([7, 8, 9]), stats_source="guided", **kw)
    assert torch.equal(cond.tokens, guided.tokens)  # the statistics source does not change the draw
    toks = cond.tokens.numpy()
    mixed = cond.uncond_logits.numpy() + 3.0 * (cond.logits.numpy() - cond.uncond_logits.numpy())
    for out, logits in ((cond, cond.logits.numpy()), (guided, mixed)):
        logp, sc, ent = _reference_stats(logits, toks)
        np.testing.assert_allclose(out.logp.numpy(), logp, atol=1e-4)
        np.testing.assert_allclose(out.self_certainty.numpy(), sc, atol=1e-4)
        np.testing.assert_allclose(out.entropy.numpy(), ent, atol=1e-4)
    assert (cond.self_certainty >= np.log(CODEBOOK) - 1e-5).all()  # logsumexp - mean >= log|V|
    assert not np.allclose(cond.self_certainty.numpy(), guided.self_certainty.numpy())


def test_sampled_rollout_statistics_equal_teacher_forced(policy: JanusPolicy) -> None:
    """Sampling with CFG 5, temperature 0.7, top-k 30: recorded stats are the raw conditional ones."""
    r = policy.sample(PROMPTS[:2], n=2, seed=3, cfg=5.0, temperature=0.7, top_k=30)
    with torch.no_grad():
        tf = policy.token_logits(r)
    assert isinstance(tf, TokenLogits)
    mask = r.token_mask
    assert torch.equal(tf.mask, torch.as_tensor(mask)) and torch.equal(tf.tokens, torch.as_tensor(r.tokens))
    assert torch.equal(tf.modality, torch.as_tensor(r.modality, dtype=torch.long))
    for field in ("logp", "self_certainty", "entropy"):
        got = getattr(tf, field).numpy()
        np.testing.assert_allclose(got[mask], getattr(r, field)[mask], atol=1e-4, err_msg=field)
        assert (got[~mask] == 0).all()
    # the per-part view agrees with the per-token view
    lengths = r.extras["text_lengths"]
    per_part = token_stats(tf.parts["image"], tf.parts["image_tokens"])[0]
    for row, n in enumerate(lengths):
        np.testing.assert_allclose(tf.logp[row, n:n + GRID * GRID].numpy(), per_part[row].numpy(), atol=1e-6)


def test_vocabulary_sizes_come_from_the_config_and_reach_the_rewards(policy: JanusPolicy) -> None:
    """The contract's vocabulary sizes (Janus-Pro: 102,400 text, 16,384 image codes; here the tiny config's) are
    written into every rollout, so the log|V|-free rewards (nsc-balanced, min/max-sc-*) run on Janus."""
    from irisbench.train.rewards import build_reward

    cfg = policy.model.config
    sizes = {"text": cfg.text_config.vocab_size, "image": CODEBOOK}
    assert policy.vocab_sizes == sizes and cfg.text_config.vocab_size == policy.model.lm_head.out_features
    assert policy.max_completion_length == 6 + GRID * GRID
    r = policy.sample(PROMPTS[:1], n=2, seed=5)
    assert r.settings["vocab_size"] == sizes
    for name in ("nsc-balanced", "min-sc-text", "max-sc-image"):
        total, _ = build_reward(name).evaluate(r, {})
        assert np.isfinite(total).all()
    text = r.token_mask & (r.modality == TEXT)
    expected = -float(r.self_certainty[0][text[0]].mean() - np.log(sizes["text"]))
    assert build_reward("min-sc-text").evaluate(r, {})[0][0] == pytest.approx(expected, rel=1e-6)


def test_teacher_forced_unconditional_logits_equal_the_loops(policy: JanusPolicy) -> None:
    r = policy.sample(PROMPTS, n=1, seed=8, cfg=5.0, top_k=1)
    out = sample_image_tokens(policy.model, r.extras["image_prompt_ids"], policy._generators(r.seeds),
                              num_tokens=GRID * GRID, cfg=5.0, bos_id=policy.bos_id, boi_id=policy.boi_id,
                              pad_id=policy.pad_id, top_k=1, keep_logits=True)
    with torch.no_grad():
        tf = policy.token_logits(r, uncond=True)
    part = tf.parts
    assert torch.equal(part["image_tokens"], out.tokens)
    assert float((part["image_uncond"] - out.uncond_logits).abs().max()) < 1e-4
    lengths = r.extras["text_lengths"]
    for row, n in enumerate(lengths):
        span = slice(n, n + GRID * GRID)
        assert torch.equal(tf.image_logits[row, span], part["image"][row])
        assert torch.equal(tf.image_logits_uncond[row, span], part["image_uncond"][row])
        assert not tf.image_logits[row, :n].any() and not tf.image_logits[row, n + GRID * GRID:].any()
    only = policy.part_logits(r, parts=("image",))
    assert "text" not in only and torch.allclose(only["image"], part["image"], atol=1e-6)
    with pytest.raises(ValueError, match="parts"):
        policy.part_logits(r, parts=("audio",))


# ------------------------------------------------------------------------------------- gradients


def test_gradient_reaches_the_lm_but_not_the_vq_model(ckpt: Path) -> None:
    pol = JanusPolicy.from_pretrained(ckpt, cot_max_new_tokens=4)
    model = pol.model
    r = pol.sample(PROMPTS[:2], n=1, seed=1)
    inner = model.model
    lm_params = {id(p): p for p in [*inner.language_model.parameters(), *model.lm_head.parameters()]}
    assert freeze_for_rl(model) == sum(p.numel() for p in lm_params.values())
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if n.startswith(("model.language_model.", "lm_head."))}
    tf = pol.token_logits(r)
    tf.logp[tf.mask].sum().backward()  # the trainer's per-token view is differentiable
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in inner.language_model.layers.parameters())
    assert inner.language_model.embed_tokens.weight.grad.abs().sum() > 0
    frozen = [inner.vqmodel, inner.generation_head, inner.generation_aligner, inner.generation_embeddings]
    assert all(p.grad is None for m in frozen for p in m.parameters())
    # unfrozen, the image head is trainable through token_logits; the VQ model never is
    model.zero_grad(set_to_none=True)
    model.requires_grad_(True)
    tf = pol.part_logits(r, parts=("image",))
    tf["image"].float().logsumexp(-1).sum().backward()
    assert inner.generation_head.vision_head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in inner.vqmodel.parameters())


# ------------------------------------------------------------------------------------ row seeds


def test_row_seed_gives_the_same_sample_whatever_the_batch(ckpt: Path) -> None:
    pol = JanusPolicy.from_pretrained(ckpt, cot_max_new_tokens=6)
    assert isinstance(pol, Policy) and isinstance(pol, TrainablePolicy)
    big = pol.sample(PROMPTS[:2], n=2, seed=[11, 12, 13, 14])
    alone = pol.sample([PROMPTS[1]], n=1, seed=[13])
    row = 2
    n_big, n_alone = big.token_mask[row].sum(), alone.token_mask[0].sum()
    assert n_big == n_alone
    np.testing.assert_array_equal(big.tokens[row, :n_big], alone.tokens[0, :n_alone])
    np.testing.assert_allclose(big.self_certainty[row, :n_big], alone.self_certainty[0, :n_alone], atol=1e-5)
    np.testing.assert_array_equal(big.images[row], alone.images[0])
    assert big.plans[row] == alone.plans[0]
    # the seed matters: rows 2 and 3 share the prompt but not the sample
    assert not np.array_equal(big.tokens[2], big.tokens[3])
    # chunking the rows (batch_size) changes nothing either
    pol.batch_size = 3
    chunked = pol.sample(PROMPTS[:2], n=2, seed=[11, 12, 13, 14])
    np.testing.assert_array_equal(chunked.tokens, big.tokens)
    np.testing.assert_array_equal(np.stack(chunked.images), np.stack(big.images))


def test_a_cot_that_ends_early_does_not_shift_its_rows_randomness(ckpt: Path) -> None:
    """Row 0 stops its CoT at a declared EOS while the other rows go on: its image must not change."""
    pol = JanusPolicy.from_pretrained(ckpt, cot_max_new_tokens=8)
    seeds = [21, 22, 23]
    probe = pol.sample(PROMPTS, n=1, seed=seeds)
    pol.eos_id = int(probe.tokens[0, 1])
    batch = pol.sample(PROMPTS, n=1, seed=seeds)
    lengths = batch.extras["text_lengths"]
    assert lengths[0] <= 2 < max(lengths)
    alone = pol.sample(PROMPTS[:1], n=1, seed=seeds[:1])
    n = int(batch.token_mask[0].sum())
    np.testing.assert_array_equal(batch.tokens[0, :n], alone.tokens[0, :n])
    np.testing.assert_array_equal(batch.images[0], alone.images[0])


def test_save_round_trip(policy: JanusPolicy, tmp_path: Path) -> None:
    folder = policy.save(tmp_path / "saved")
    assert json.loads((folder / "irisbench_policy.json").read_text())["policy"] == "janus-pro"
    again = JanusPolicy.from_pretrained(folder, cot_max_new_tokens=6)
    a, b = policy.sample(PROMPTS[:1], seed=4), again.sample(PROMPTS[:1], seed=4)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.images[0], b.images[0])


def test_cot_off_draws_image_tokens_only(ckpt: Path) -> None:
    pol = JanusPolicy.from_pretrained(ckpt, cot=False)
    r = pol.sample(PROMPTS[:1], n=2, seed=5)
    assert r.tokens.shape == (2, GRID * GRID) and (r.modality == IMAGE).all() and r.plans == ["", ""]
    assert r.extras["image_prompt_ids"][0] == pol.encode(image_request(PROMPTS[0])) + [pol.boi_id]
    tf = pol.part_logits(r)
    assert tf["text"].shape[:2] == (2, 0) and tf["image"].shape == (2, GRID * GRID, CODEBOOK)
    info = pol.describe()
    assert info["name"] == "janus-pro" and info["image_vocab"] == CODEBOOK and info["sampling"]["cot"] is False
    assert info["parameters"] == sum(p.numel() for p in pol.model.parameters())


# ------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("tokenizer.json", "tokenizer.json"),
        ("model.safetensors", "model.safetensors"),
        ("config.json", "config.json"),
        ("processor_config.json", "processor_config.json"),
    ],
)
def test_incomplete_folder_is_rejected(ckpt: Path, tmp_path: Path, remove: str, message: str) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(ckpt, copy)
    (copy / remove).unlink()
    with pytest.raises(JanusCheckpointError, match=message):
        JanusPolicy.from_pretrained(copy)


def test_other_bad_checkpoints(ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(JanusCheckpointError, match="no such checkpoint folder"):
        JanusPolicy.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(JanusCheckpointError, match="not in the local Hugging Face cache"):
        JanusPolicy.from_pretrained("irisbench-test/no-such-model")
    bin_only = tmp_path / "bin"
    shutil.copytree(ckpt, bin_only)
    (bin_only / "model.safetensors").rename(bin_only / "pytorch_model.bin")
    with pytest.raises(JanusCheckpointError, match="only safetensors"):
        JanusPolicy.from_pretrained(bin_only)
    wrong = tmp_path / "wrong"
    shutil.copytree(ckpt, wrong)
    (wrong / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(JanusCheckpointError, match="model_type is 'llama'"):
        JanusPolicy.from_pretrained(wrong)
    (wrong / "config.json").write_text('{"model_type": "multi_modality"}')
    with pytest.raises(JanusCheckpointError, match="convert_janus_weights_to_hf"):
        JanusPolicy.from_pretrained(wrong)
    (wrong / "config.json").write_text("[1, 2")
    with pytest.raises(JanusCheckpointError, match="not a JSON object"):
        JanusPolicy.from_pretrained(wrong)


def test_bad_sampling_arguments(policy: JanusPolicy, ckpt: Path) -> None:
    with pytest.raises(ValueError, match="cfg"):
        policy.sample(PROMPTS[:1], cfg=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        policy.sample(PROMPTS[:1], temperature=0.0)
    with pytest.raises(ValueError, match="n "):
        policy.sample(PROMPTS[:1], n=0)
    with pytest.raises(ValueError, match="top_k"):
        policy.sample(PROMPTS[:1], top_k=0)
    with pytest.raises(ValueError, match="expected 2 seeds"):
        policy.sample(PROMPTS[:1], n=2, seed=[1, 2, 3])
    with pytest.raises(ValueError, match="non-empty strings"):
        policy.sample(["a cat", "  "])
    with pytest.raises(ValueError, match="non-empty strings"):
        policy.sample("a cat")
    with pytest.raises(ValueError, match="stats_source"):
        JanusPolicy.from_pretrained(ckpt, stats_source="mixed")
    with pytest.raises(ValueError, match="cfg"):
        JanusPolicy.from_pretrained(ckpt, cfg=-0.5)
    with pytest.raises(ValueError, match="extras"):
        from irisbench.policies.base import Rollout

        policy.token_logits(Rollout(prompts=["a"], seeds=[0], images=[]))


# ------------------------------------------------------------------------- GRPO memory options


@pytest.mark.parametrize("chunk,checkpointing", [(7, False), (0, True), (5, True)])
def test_chunked_statistics_and_checkpointing_equal_the_whole_logits(ckpt: Path, chunk: int,
                                                                     checkpointing: bool) -> None:
    """logits_chunk / gradient_checkpointing change memory only: the per-token view and its gradients agree."""
    ref_pol = JanusPolicy.from_pretrained(ckpt, cot_max_new_tokens=5)
    r = ref_pol.sample(PROMPTS[:2], n=2, seed=4)
    pol = JanusPolicy.from_pretrained(ckpt, cot_max_new_tokens=5, logits_chunk=chunk,
                                      gradient_checkpointing=checkpointing)
    assert pol.describe()["compute"] == {"logits_chunk": chunk, "gradient_checkpointing": checkpointing,
                                         "decode": "eager"}
    results = []
    for p in (ref_pol, pol):
        p.model.zero_grad(set_to_none=True)
        tf = p.part_logits(r)
        m = tf["mask"]
        loss = tf["logp"][m].sum() - 0.1 * tf["self_certainty"][m].sum() + 0.05 * tf["entropy"][m].sum()
        loss.backward()
        grads = {n: q.grad.clone() for n, q in p.model.named_parameters() if q.grad is not None}
        results.append((tf, grads))
        assert not p.model.training  # checkpointing switched training mode on for the pass only
    (ref, g_ref), (got, g_got) = results
    assert ("text" in got) == (chunk == 0) and ("image" in got) == (chunk == 0)
    for key in ("logp", "self_certainty", "entropy"):
        torch.testing.assert_close(got[key], ref[key], rtol=1e-5, atol=1e-5)
    assert set(g_got) == set(g_ref) and len(g_ref) > 10
    for name, g in g_ref.items():
        scale = float(g.abs().max())
        assert float((g_got[name] - g).abs().max()) <= 1e-5 * scale, (name, float((g_got[name] - g).abs().max()), scale)
    # guided log-probs still get their image logits (both branches)
    with torch.no_grad():
        guided = pol.part_logits(r, uncond=True)
        full = ref_pol.part_logits(r, uncond=True)
    torch.testing.assert_close(guided["image_logits_uncond"], full["image_logits_uncond"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(guided["logp"], full["logp"], rtol=1e-5, atol=1e-5)
    # the options do act: fewer saved activations for backward (checkpointed blocks keep only their inputs)
    saved = []
    for p in (ref_pol, pol):
        count = [0]

        def pack(t: torch.Tensor, count: list[int] = count) -> torch.Tensor:
            count[0] += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            p.part_logits(r)
        saved.append(count[0])
    assert saved[1] < saved[0]


def test_memory_options_are_checked(ckpt: Path) -> None:
    with pytest.raises(ValueError, match="logits_chunk must be an integer >= 0"):
        JanusPolicy.from_pretrained(ckpt, logits_chunk=-1)
    pol = JanusPolicy.from_pretrained(ckpt, logits_chunk=4)
    r = pol.sample(PROMPTS[:1], n=1, seed=0)
    with pytest.raises(ValueError, match="per-token view only"):
        pol.part_logits(r, parts=("image",))
    assert "image" in pol.part_logits(r, parts=("image",), logits=True)


# ------------------------------------------------------------------- fixed-shape (static) decoding


@pytest.mark.parametrize("cfg,top_k", [(5.0, 1), (3.0, 20), (1.0, None)])
def test_static_image_loop_equals_the_eager_loop(policy: JanusPolicy, cfg: float, top_k: int | None) -> None:
    ids = _image_ids(policy, PROMPTS)  # three lengths: left padding in the preallocated mask
    kw = dict(num_tokens=GRID * GRID, cfg=cfg, bos_id=policy.bos_id, boi_id=policy.boi_id, pad_id=policy.pad_id,
              temperature=0.9, top_k=top_k, keep_logits=True)
    eager = sample_image_tokens(policy.model, ids, policy._generators([5, 6, 7]), **kw)
    static = sample_image_tokens(policy.model, ids, policy._generators([5, 6, 7]), decode="static", **kw)
    assert torch.equal(static.tokens, eager.tokens)
    for field in ("logp", "self_certainty", "entropy"):
        torch.testing.assert_close(getattr(static, field), getattr(eager, field), rtol=0, atol=1e-5)
    assert float((static.logits - eager.logits).abs().max()) < 1e-4
    if cfg != 1.0:
        assert float((static.uncond_logits - eager.uncond_logits).abs().max()) < 1e-4


def test_static_image_loop_greedy_equals_hf_generate(policy: JanusPolicy) -> None:
    ids = _image_ids(policy, PROMPTS)
    out = sample_image_tokens(policy.model, ids, policy._generators([1, 2, 3]), num_tokens=GRID * GRID, cfg=5.0,
                              bos_id=policy.bos_id, boi_id=policy.boi_id, pad_id=policy.pad_id, top_k=1,
                              decode="static")
    batch = policy.processor(text=[image_request(p) for p in PROMPTS], generation_mode="image",
                             return_tensors="pt", padding=True).to(policy.device)
    hf = policy.model.generate(**batch, generation_mode="image", do_sample=False, guidance_scale=5.0).cpu()
    assert torch.equal(out.tokens, hf)


def test_static_text_loop_equals_the_eager_loop_with_early_eos(policy: JanusPolicy) -> None:
    ids = [policy.encode(cot_request(p)) for p in PROMPTS]
    free = sample_text(policy.model, ids, policy._generators([4, 5, 6]), max_new_tokens=10, eos_id=policy.eos_id,
                       pad_id=policy.pad_id, top_k=1)
    eos = int(free.tokens[0, 2])  # row 0 stops early: its mask column turns 0 while the others go on
    for temperature, top_k in ((1.0, 1), (0.8, 30)):
        kw = dict(max_new_tokens=10, eos_id=eos, pad_id=policy.pad_id, temperature=temperature, top_k=top_k,
                  keep_logits=True)
        eager = sample_text(policy.model, ids, policy._generators([4, 5, 6]), **kw)
        static = sample_text(policy.model, ids, policy._generators([4, 5, 6]), decode="static", **kw)
        assert torch.equal(static.tokens, eager.tokens) and torch.equal(static.mask, eager.mask)
        assert top_k != 1 or not eager.mask.all()  # greedy: the early stop is exercised
        for field in ("logp", "self_certainty", "entropy"):
            torch.testing.assert_close(getattr(static, field), getattr(eager, field), rtol=0, atol=1e-5)
        m = eager.mask
        assert float((static.logits - eager.logits)[m].abs().max()) < 1e-4


def test_static_policy_samples_equal_eager_and_compiled_needs_cuda(ckpt: Path) -> None:
    eager = JanusPolicy.from_pretrained(ckpt, cot_max_new_tokens=6)
    static = JanusPolicy.from_pretrained(ckpt, cot_max_new_tokens=6, decode="static")
    a = eager.sample(PROMPTS[:2], n=2, seed=9)
    b = static.sample(PROMPTS[:2], n=2, seed=9)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(np.stack(a.images), np.stack(b.images))
    np.testing.assert_allclose(a.self_certainty, b.self_certainty, atol=1e-5)
    # the second sample reused the decoder of the first (same shapes): a restarted cache gives the same rows
    held = dict(static.model.model.language_model._irisbench_decoders)
    assert len(held) == 2  # the CoT loop's and the image loop's
    c = static.sample(PROMPTS[:2], n=2, seed=9)
    assert static.model.model.language_model._irisbench_decoders == held
    np.testing.assert_array_equal(c.tokens, a.tokens)
    import copy

    copied = copy.deepcopy(static.model).model.language_model._irisbench_decoders
    assert set(copied.values()) == {None}
    with pytest.raises(ValueError, match="decode must be one of eager, static, compiled"):
        JanusPolicy.from_pretrained(ckpt, decode="graphs")
    compiled = JanusPolicy.from_pretrained(ckpt, cot_max_new_tokens=2, decode="compiled", device="cpu")
    with pytest.raises(ValueError, match="decode: compiled captures CUDA graphs and needs a CUDA device"):
        compiled.sample(PROMPTS[:1], n=1, seed=0)


def test_a_folder_that_does_not_match_the_recipe_is_refused(ckpt: Path) -> None:
    text = json.loads((ckpt / "config.json").read_text())["text_config"]
    ok = JanusPolicy.from_pretrained(ckpt, expect={"hidden_size": text["hidden_size"],
                                                   "num_hidden_layers": text["num_hidden_layers"]})
    assert ok.model.config.text_config.hidden_size == text["hidden_size"]
    with pytest.raises(JanusCheckpointError, match=r"config.json: field text_config.hidden_size is 64, the recipe "
                                                   r"expects 2048"):
        JanusPolicy.from_pretrained(ckpt, expect={"hidden_size": 2048, "num_hidden_layers": 24})
    saved = json.loads((ckpt / "config.json").read_text())
    saved_dtype = saved.get("dtype", saved.get("torch_dtype"))
    with pytest.raises(JanusCheckpointError, match=f"field dtype is {saved_dtype!r}, the recipe expects 'bfloat16'"):
        JanusPolicy.from_pretrained(ckpt, expect={"dtype": "bf16"})
    with pytest.raises(ValueError, match="expect must be a mapping"):
        JanusPolicy.from_pretrained(ckpt, expect=[2048])
