"""The shapes-world LM policy: vocabulary, constrained KV-cached sampling, statistics, CFG, seeds, I/O.

Tiny random models built from configs; expected values come from independent reference code in this
file (a per-row, unbatched, uncached greedy loop; numpy statistics), not from the policy itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from irisbench.policies.base import IMAGE, TEXT, Rollout, TrainablePolicy
from irisbench.policies.shapes_decode_reference import draw_tokens
from irisbench.policies.shapes_lm import (
    SHIPPED_BASE,
    SamplingDefaults,
    ShapesCheckpointError,
    ShapesLMPolicy,
    ShapesVocab,
    UnknownTokensError,
    load_shipped_base,
)
from irisbench.world.plan import PLAN_WORDS
from irisbench.world.prompts import PROMPT_WORDS, UnknownWordsError
from irisbench.world.tokenizer import PatchTokenizer, theoretical_patches

PROMPTS = ["a photo of a red circle", "a photo of three squares", "a photo of a diamond left of a triangle"]



pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


@pytest.fixture(scope="module")
def tokenizer() -> PatchTokenizer:
    return PatchTokenizer(theoretical_patches())


@pytest.fixture(scope="module")
def policy(tokenizer: PatchTokenizer) -> ShapesLMPolicy:
    torch.manual_seed(0)
    pol = ShapesLMPolicy.create(tokenizer, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                seed=1, defaults=SamplingDefaults(max_plan_tokens=6))
    # random init is near-uniform; sharpen it so greedy/CFG choices are well separated from ties
    with torch.no_grad():
        pol.model.lm_head.weight.mul_(8.0)
    return pol


# ------------------------------------------------------------------------------------------- vocabulary
def test_vocab_layout(policy: ShapesLMPolicy, tokenizer: PatchTokenizer) -> None:
    v = policy.vocab
    assert v.words[: len(PROMPT_WORDS)] == PROMPT_WORDS
    assert set(v.words) == set(PROMPT_WORDS) | set(PLAN_WORDS)
    assert v.image_offset == 7 + len(v.words)
    assert v.size == v.image_offset + tokenizer.codebook_size == policy.model.config.vocab_size
    assert len({v.pad, v.bos, v.null, v.bop, v.eop, v.boi, v.eoi}) == 7
    assert [v.decode_words([i]) for i in v.text_ids[:-1]] == list(PLAN_WORDS)
    assert v.text_ids[-1] == v.eop
    ids = v.encode_prompt("A photo of  a RED circle")
    assert v.decode_words(ids) == "a photo of a red circle"
    assert v.decode_words([*v.encode_plan("big red circle top left"), v.eop, ids[0]]) == "big red circle top left"
    again = ShapesVocab.from_json(json.loads(json.dumps(v.to_json())), "x")
    assert again.to_json() == v.to_json()


def test_unknown_words_are_named(policy: ShapesLMPolicy) -> None:
    with pytest.raises(UnknownTokensError, match="cat, hexagon") as e:
        policy.sample(["a photo of a cat and a hexagon"])
    assert isinstance(e.value, UnknownWordsError) and isinstance(e.value, ValueError)
    assert e.value.words == ("cat", "hexagon")
    with pytest.raises(UnknownTokensError, match="top"):  # a plan word is not a prompt word
        policy.encode_prompts(["a photo of a circle top"])
    with pytest.raises(UnknownTokensError, match=r"circle\."):  # punctuation is not silently dropped
        policy.encode_prompts(["a photo of a circle."])
    with pytest.raises(UnknownTokensError, match="photo"):
        policy.vocab.encode_plan("a photo")
    with pytest.raises(TypeError):
        policy.encode_prompts("a photo of a circle")


# ------------------------------------------------------------------------------------------- sampling
def test_draw_tokens_inverse_cdf_by_hand() -> None:
    z = torch.log(torch.tensor([[0.1, 0.2, 0.7]])).repeat(4, 1)
    u = torch.tensor([0.05, 0.15, 0.29, 0.31], dtype=torch.float64)
    assert draw_tokens(z, u, 1.0, None).tolist() == [0, 1, 1, 2]
    # top-2 keeps 0.2 and 0.7 -> cdf 2/9, 1
    assert draw_tokens(z, torch.tensor([0.1, 0.2, 0.23, 0.99], dtype=torch.float64), 1.0, 2).tolist() == [1, 1, 2, 2]
    assert draw_tokens(z, u, 1.0, 1).tolist() == [2, 2, 2, 2]
    # temperature 0.5 squares the probabilities: 1/54, 4/54, 49/54
    assert draw_tokens(z, torch.tensor([0.018, 0.019, 0.09, 0.1], dtype=torch.float64), 0.5, None).tolist() \
        == [0, 1, 1, 2]


def test_sample_shapes_masks_modality(policy: ShapesLMPolicy, tokenizer: PatchTokenizer) -> None:
    r = policy.sample(PROMPTS[:2], n=3, seed=5)
    v = policy.vocab
    assert isinstance(r, Rollout) and len(r) == 6
    assert r.prompts == [PROMPTS[0]] * 3 + [PROMPTS[1]] * 3
    b, width = r.tokens.shape
    plan_lens = (r.token_mask & (r.modality == TEXT)).sum(1)
    assert width == plan_lens.max() + 64
    for i in range(b):
        pl = int(plan_lens[i])
        assert 1 <= pl <= 6
        assert r.token_mask[i].sum() == pl + 64 and r.token_mask[i, : pl + 64].all()
        assert (r.modality[i, :pl] == TEXT).all() and (r.modality[i, pl : pl + 64] == IMAGE).all()
        assert np.isin(r.tokens[i, :pl], v.text_ids).all()
        assert r.tokens[i, pl - 1] == v.eop and (r.tokens[i, : pl - 1] != v.eop).all()
        img = r.tokens[i, pl : pl + 64] - v.image_offset
        assert ((img >= 0) & (img < tokenizer.codebook_size)).all()
        assert np.array_equal(r.images[i], tokenizer.decode(img[None])[0])
        assert r.images[i].dtype == np.uint8 and r.images[i].shape == (32, 32, 3)
        assert r.plans[i] == v.decode_words(r.tokens[i, :pl])
        assert bool(r.extras["plan_truncated"][i]) == (pl == 6)  # EOP forced at the 6th step
        assert r.forced[i].tolist() == [pl == 6 and j == 5 for j in range(r.forced.shape[1])]  # that EOP only
        real = r.token_mask[i]
        assert np.isfinite(r.logp[i, real]).all() and (r.logp[i, real] <= 0).all()
        assert (r.self_certainty[i, real] >= 0).all() and (r.entropy[i, real] >= 0).all()
    assert r.settings["vocab_size"] == {"text": len(PLAN_WORDS) + 1, "image": tokenizer.codebook_size}
    assert policy.vocab_sizes == r.settings["vocab_size"]  # the contract's sizes reach every rollout
    assert isinstance(policy, TrainablePolicy) and policy.max_completion_length == policy.defaults.max_plan_tokens + 64
    assert r.token_mask.sum(1).max() <= policy.max_completion_length
    assert r.settings["cfg"] == 3.0 and r.settings["stats_source"] == "conditional"
    summary = r.token_summary(0)
    assert summary["plan_len"] == plan_lens[0]


def test_forced_eop_when_the_plan_runs_out(policy: ShapesLMPolicy) -> None:
    r = policy.generate(PROMPTS, n=2, seed=0, max_plan_tokens=2)
    lens = (r.token_mask & (r.modality == TEXT)).sum(1)
    assert (lens <= 2).all()
    ends = r.tokens[np.arange(len(r)), lens - 1]
    assert (ends == policy.vocab.eop).all()
    assert np.array_equal(r.extras["plan_truncated"], lens == 2)


def _reference_greedy(policy: ShapesLMPolicy, prompt: str, cfg: float, max_plan: int) -> list[int]:
    """One row, no batching, no padding, no cache: recompute the full prefix at every step."""
    v, model = policy.vocab, policy.model
    text_ids = torch.as_tensor(v.text_ids)
    lo, hi = v.image_offset, v.image_offset + v.codebook_size

    def last(seq: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return model(input_ids=torch.tensor([seq])).logits[0, -1].float()

    seq = [v.bos, *v.encode_prompt(prompt), v.bop]
    out: list[int] = []
    for t in range(max_plan):
        tok = v.eop if t == max_plan - 1 else int(text_ids[int(last(seq)[text_ids].argmax())])
        seq.append(tok)
        out.append(tok)
        if tok == v.eop:
            break
    seq.append(v.boi)
    useq = [v.bos, v.null, v.boi]
    for _ in range(64):
        c = last(seq)[lo:hi]
        if cfg == 1.0:
            g = c
        else:
            u = last(useq)[lo:hi]
            g = u + cfg * (c - u)
        tok = lo + int(g.argmax())
        seq.append(tok)
        useq.append(tok)
        out.append(tok)
    return out


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_kv_cached_greedy_equals_full_recompute(policy: ShapesLMPolicy, cfg: float) -> None:
    cached = policy.generate(PROMPTS, seed=0, cfg=cfg, top_k=1)
    naive = policy.generate(PROMPTS, seed=0, cfg=cfg, top_k=1, use_cache=False)
    assert np.array_equal(cached.tokens, naive.tokens)
    np.testing.assert_allclose(cached.logp, naive.logp, atol=1e-4)
    for i, p in enumerate(PROMPTS):
        ref = _reference_greedy(policy, p, cfg, max_plan=6)
        assert cached.tokens[i, cached.token_mask[i]].tolist() == ref


def _np_stats(z: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = z.astype(np.float64)
    m = z.max(-1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(-1))
    logp_all = z - lse[:, None]
    ent = -(np.exp(logp_all) * logp_all).sum(-1)
    return logp_all[np.arange(len(z)), chosen], lse - z.mean(-1), ent


@pytest.mark.parametrize("stats_source", ["conditional", "guided"])
def test_token_stats_equal_direct_computation(policy: ShapesLMPolicy, stats_source: str) -> None:
    r = policy.generate(PROMPTS, seed=3, cfg=2.5, temperature=1.3, stats_source=stats_source, keep_logits=True)
    kept = r.extras["logits"][0]
    local = r.extras["local_tokens"]
    plan_lens = (r.token_mask & (r.modality == TEXT)).sum(1)
    assert r.settings["stats_source"] == stats_source
    for t, z in enumerate(kept["plan"]):  # plan: always the conditional logits
        rows = np.nonzero(plan_lens > t)[0]
        lp, sc, ent = _np_stats(z.numpy()[rows], local[rows, t])
        np.testing.assert_allclose(r.logp[rows, t], lp, atol=1e-5)
        np.testing.assert_allclose(r.self_certainty[rows, t], sc, atol=1e-4)
        np.testing.assert_allclose(r.entropy[rows, t], ent, atol=1e-5)
    key = "image_cond" if stats_source == "conditional" else "image_guided"
    for t, z in enumerate(kept[key]):
        cols = plan_lens + t
        rows = np.arange(len(r))
        lp, sc, ent = _np_stats(z.numpy(), local[rows, cols])
        np.testing.assert_allclose(r.logp[rows, cols], lp, atol=1e-5)
        np.testing.assert_allclose(r.self_certainty[rows, cols], sc, atol=1e-4)
        np.testing.assert_allclose(r.entropy[rows, cols], ent, atol=1e-5)


def test_stats_source_switch_changes_only_image_stats(policy: ShapesLMPolicy) -> None:
    a = policy.generate(PROMPTS, seed=4, cfg=3.0, stats_source="conditional")
    b = policy.generate(PROMPTS, seed=4, cfg=3.0, stats_source="guided")
    assert np.array_equal(a.tokens, b.tokens)  # the draw never depends on the statistics
    text = a.token_mask & (a.modality == TEXT)
    img = a.token_mask & (a.modality == IMAGE)
    np.testing.assert_array_equal(a.self_certainty[text], b.self_certainty[text])
    assert np.abs(a.self_certainty[img] - b.self_certainty[img]).max() > 1e-2
    with pytest.raises(ValueError, match="stats_source"):
        policy.generate(PROMPTS, stats_source="mixed")


def test_record_stats_off_leaves_nan_and_same_tokens(policy: ShapesLMPolicy) -> None:
    a = policy.generate(PROMPTS, seed=9)
    b = policy.generate(PROMPTS, seed=9, record_stats=False)
    assert np.array_equal(a.tokens, b.tokens)
    assert np.isnan(b.logp[b.token_mask]).all()


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_teacher_forced_logits_equal_sampling_logits(policy: ShapesLMPolicy, cfg: float) -> None:
    r = policy.generate(PROMPTS, n=2, seed=11, cfg=cfg, keep_logits=True, batch_size=4)
    out = policy.token_logits(r)
    assert out.parts["text_logits"].requires_grad and out.parts["image_logits"].shape[-1] == policy.vocab.codebook_size
    plan_lens = (r.token_mask & (r.modality == TEXT)).sum(1)
    row0 = 0
    for chunk in r.extras["logits"]:
        nb = chunk["image_cond"][0].shape[0]
        rows = np.arange(row0, row0 + nb)
        for t, z in enumerate(chunk["plan"]):
            live = rows[plan_lens[rows] > t]
            torch.testing.assert_close(out.parts["text_logits"][live, t].detach(), z[live - row0], atol=1e-4, rtol=1e-4)
        for t, z in enumerate(chunk["image_cond"]):
            tf = out.parts["image_logits"][rows, torch.as_tensor(plan_lens[rows] + t)].detach()
            torch.testing.assert_close(tf, z, atol=1e-4, rtol=1e-4)
        row0 += nb
    m = torch.as_tensor(r.token_mask)
    np.testing.assert_allclose(out.logp[m].detach().numpy(), r.logp[r.token_mask], atol=1e-4)
    np.testing.assert_allclose(out.self_certainty[m].detach().numpy(), r.self_certainty[r.token_mask],
                               atol=1e-4)
    assert (out.logp[~m] == 0).all()
    policy.model.zero_grad()
    out.logp[m].sum().backward()
    assert policy.model.lm_head.weight.grad is not None and policy.model.lm_head.weight.grad.abs().sum() > 0
    policy.model.zero_grad()


def test_cfg_guides_with_the_unconditional_row(policy: ShapesLMPolicy) -> None:
    r = policy.generate(PROMPTS, seed=2, cfg=4.0, top_k=1)
    out = policy.token_logits(r, uncond=True)
    img = torch.as_tensor(r.token_mask & (r.modality == IMAGE))
    c, u = out.image_logits[img], out.image_logits_uncond[img]
    guided_choice = (u + 4.0 * (c - u)).argmax(-1)
    assert torch.equal(guided_choice, out.tokens[img])
    assert not torch.equal(c.argmax(-1), guided_choice)  # guidance really changed some choices
    # cfg = 0 samples the unconditional model: the image ignores the prompt and the plan
    per_prompt = policy.generate(PROMPTS, seed=[7, 7, 7], cfg=0.0)
    codes = per_prompt.extras["image_codes"]
    assert (codes == codes[0]).all()
    assert len(set(per_prompt.plans)) > 1


def test_per_row_seeds_do_not_depend_on_the_batch(policy: ShapesLMPolicy) -> None:
    prompts = PROMPTS + ["a photo of a blue square", "a photo of four circles", "a photo of a triangle",
                         "a photo of an orange diamond and a white circle", "a photo of a square below a circle"]
    together = policy.sample(prompts, n=1, seed=21, batch_size=8)
    for i in (0, 4, 7):  # rows at the start, middle and end of the batch, drawn alone
        s = policy.sample([prompts[i]], n=1, seed=[together.seeds[i]], batch_size=1)
        k = int(s.token_mask[0].sum())
        assert np.array_equal(s.tokens[0, :k], together.tokens[i, :k])
        np.testing.assert_allclose(s.logp[0, :k], together.logp[i, :k], atol=1e-4)
    again = policy.sample(prompts, n=1, seed=21, batch_size=3)
    assert np.array_equal(again.tokens, together.tokens)
    other = policy.sample(prompts, n=1, seed=22, batch_size=8)
    assert not np.array_equal(other.tokens, together.tokens)


@pytest.mark.parametrize("kwargs, match", [({"cfg": -0.5}, "cfg"), ({"temperature": 0.0}, "temperature"),
                                           ({"temperature": -1.0}, "temperature"), ({"n": 0}, "n "),
                                           ({"top_k": 0}, "top_k")])
def test_bad_sampling_arguments(policy: ShapesLMPolicy, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        policy.sample(PROMPTS, **kwargs)


def test_bad_seed_count(policy: ShapesLMPolicy) -> None:
    with pytest.raises(ValueError, match="seeds"):
        policy.sample(PROMPTS, n=2, seed=[1, 2, 3])


# ------------------------------------------------------------------------------------------- save / load
def test_save_load_round_trip(policy: ShapesLMPolicy, tmp_path: Path) -> None:
    policy.save(tmp_path / "ckpt")
    for name in ("config.json", "model.safetensors", "irisbench_policy.json", "image_tokenizer.safetensors"):
        assert (tmp_path / "ckpt" / name).is_file()
    assert not list((tmp_path / "ckpt").glob("*.bin")) and not list((tmp_path / "ckpt").glob("*.pt"))
    loaded = ShapesLMPolicy.load(tmp_path / "ckpt")
    a = policy.sample(PROMPTS, n=2, seed=3)
    b = loaded.sample(PROMPTS, n=2, seed=3)
    assert np.array_equal(a.tokens, b.tokens) and a.plans == b.plans
    np.testing.assert_array_equal(a.logp, b.logp)
    assert loaded.describe()["parameters"] == policy.num_parameters()
    assert loaded.describe()["checkpoint"] == str(tmp_path / "ckpt")
    assert ShapesLMPolicy.load(tmp_path / "ckpt", cfg=5.0).defaults.cfg == 5.0
    # plain transformers reads the weights folder
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path / "ckpt"), use_safetensors=True)
    assert plain.config.vocab_size == policy.vocab.size


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors", "irisbench_policy.json",
                                     "image_tokenizer.safetensors"])
def test_load_names_the_missing_file(policy: ShapesLMPolicy, tmp_path: Path, missing: str) -> None:
    policy.save(tmp_path / "ckpt")
    (tmp_path / "ckpt" / missing).unlink()
    with pytest.raises(ShapesCheckpointError, match=missing.replace(".", r"\.")):
        ShapesLMPolicy.load(tmp_path / "ckpt")


def test_load_rejects_mismatched_parts(policy: ShapesLMPolicy, tokenizer: PatchTokenizer, tmp_path: Path) -> None:
    ck = tmp_path / "ckpt"
    policy.save(ck)
    meta_path, config_path = ck / "irisbench_policy.json", ck / "config.json"
    meta, config = json.loads(meta_path.read_text()), json.loads(config_path.read_text())

    # vocabulary in irisbench_policy.json larger than the model's
    bad = json.loads(json.dumps(meta))
    bad["vocab"]["prompt_words"].append("hexagon")
    del bad["vocab"]["words"], bad["vocab"]["size"], bad["vocab"]["image_offset"]
    meta_path.write_text(json.dumps(bad))
    with pytest.raises(ShapesCheckpointError, match="vocab_size"):
        ShapesLMPolicy.load(ck)
    meta_path.write_text(json.dumps(meta))

    # embedding rows that do not match config.json's vocab_size
    other = ShapesLMPolicy.create(tokenizer, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=16)
    shutil.copy(other.save(tmp_path / "other") / "model.safetensors", ck / "model.safetensors")
    with pytest.raises(ShapesCheckpointError, match="embed_tokens"):
        ShapesLMPolicy.load(ck)
    policy.save(ck)

    # image tokenizer with a different codebook size
    PatchTokenizer(tokenizer.codebook[:100]).save(ck / "image_tokenizer.safetensors")
    with pytest.raises(ShapesCheckpointError, match="image_tokenizer.safetensors: 100 codes"):
        ShapesLMPolicy.load(ck)
    policy.save(ck)

    # wrong format, unreadable JSON, bad sampling defaults
    meta_path.write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ShapesCheckpointError, match="format_version"):
        ShapesLMPolicy.load(ck)
    meta_path.write_text("{not json")
    with pytest.raises(ShapesCheckpointError, match="irisbench_policy.json: not valid JSON"):
        ShapesLMPolicy.load(ck)
    meta_path.write_text(json.dumps({**meta, "sampling": {**meta["sampling"], "temperature": 0}}))
    with pytest.raises(ShapesCheckpointError, match="temperature"):
        ShapesLMPolicy.load(ck)
    meta_path.write_text(json.dumps(meta))
    config_path.write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ShapesCheckpointError, match="model_type"):
        ShapesLMPolicy.load(ck)
    with pytest.raises(ShapesCheckpointError, match="not a folder"):
        ShapesLMPolicy.load(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------- shipped base
def test_shipped_base_loads_and_samples_valid_images() -> None:
    files = {p.name: p.stat().st_size for p in SHIPPED_BASE.iterdir()}
    assert {"config.json", "model.safetensors", "irisbench_policy.json", "image_tokenizer.safetensors",
            "README.md"} <= set(files)
    assert sum(files.values()) <= 20 * 2**20
    base = load_shipped_base()
    assert base.describe()["parameters"] > 1_000_000
    r = base.sample(["a photo of a red circle", "a photo of two squares"], n=2, seed=0)
    assert len(r.images) == 4
    for i, im in enumerate(r.images):
        assert im.dtype == np.uint8 and im.shape == (32, 32, 3)
        assert r.token_mask[i].sum() == (r.token_mask[i] & (r.modality[i] == TEXT)).sum() + 64
    # a trained base writes grammatical plans that mention the prompt's shape
    assert all("circle" in p for p in r.plans[:2])
