"""The fast sampling loop (``irisbench.policies.shapes_decode``, the default) against the reference loop.

The reference is ``generate(fast=False)``: transformers' own Llama forward with a ``DynamicCache``, the loop
that produced the published numbers. Same seeds must give the same tokens, plans and images and the same
per-token statistics (bit-identical where ``sgemm_rows_invariant()`` holds; else to round-off), with and without CFG,
guided statistics, top-k, temperature, differing plan lengths, a forced end of plan, statistics off,
kept logits, row compaction, deduplicated prefills and the threaded split of the image phase.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from irisbench.core.errors import UsageError
from irisbench.policies import shapes_decode
from irisbench.policies.shapes_decode import generate_chunk_fast, image_parts, supports_fast_decode
from irisbench.policies.shapes_decode_reference import generate_chunk_reference
from irisbench.policies.shapes_lm import SamplingDefaults, build_model, load_shipped_base
from irisbench.policies.shapes_step import MIN_ROWS, sgemm_rows_invariant

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module

PROMPTS = ["a photo of a red circle", "a photo of three squares", "a photo of a diamond left of a triangle",
           "a photo of an orange diamond and a white circle", "a photo of a square below a circle"]
# where this CPU's sgemm rounds a row alike at any row count the fast loop must reproduce the reference's
# bits; elsewhere (MKL on AVX2 only) both loops' numbers move with the batch shape, by round-off
EXACT = sgemm_rows_invariant()
TOL = {"atol": 0.0, "rtol": 0.0} if EXACT else {"atol": 1e-4, "rtol": 0.0}
EIGHT = [*PROMPTS, "a photo of a blue square", "a photo of four circles", "a photo of a triangle and a square"]


@pytest.fixture(scope="module")
def base():  # noqa: ANN201
    return load_shipped_base()


def _same(a, b, tol: float | None = None) -> None:  # noqa: ANN001
    """Same tokens, plans, images; statistics equal (``TOL``) or within ``tol`` where given."""
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.token_mask, b.token_mask)
    np.testing.assert_array_equal(a.modality, b.modality)
    np.testing.assert_array_equal(a.extras["plan_truncated"], b.extras["plan_truncated"])
    assert a.plans == b.plans
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images, strict=True))
    m = a.token_mask
    for field in ("logp", "self_certainty", "entropy"):  # NaN where statistics are off, in both
        kw = TOL if tol is None else {"atol": tol, "rtol": 0.0}
        np.testing.assert_allclose(getattr(a, field)[m], getattr(b, field)[m], **kw, err_msg=field)


@pytest.mark.slow
@pytest.mark.parametrize(("kw"), [
    {"cfg": 3.0},  # the GRPO setting: CFG rows, conditional statistics
    {"cfg": 5.0, "stats_source": "guided", "top_k": 50, "temperature": 1.2},
    {"cfg": 1.0},  # no unconditional rows
    {"cfg": 3.0, "max_plan_tokens": 6},  # long plans hit the cap: EOP forced
    {"cfg": 3.0, "record_stats": False},
])
def test_fast_loop_draws_the_reference_tokens(base, kw: dict) -> None:  # noqa: ANN001
    ref = base.generate(PROMPTS, n=2, seed=7, fast=False, **kw)
    new = base.generate(PROMPTS, n=2, seed=7, **kw)  # the default loop
    _same(ref, new)
    if "max_plan_tokens" in kw:
        assert ref.extras["plan_truncated"].any()  # the forced-EOP path was exercised
    else:
        assert len({len(p.split()) for p in ref.plans}) > 1  # plans of differing lengths in one batch
    if kw.get("record_stats") is False:
        assert np.isnan(new.logp[new.token_mask]).all()


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [3.0, 1.0])
def test_many_rows_compaction_and_deduplicated_prefill(base, cfg: float) -> None:  # noqa: ANN001
    """32 rows: the plan phase drops finished rows (down to MIN_ROWS fillers), repeated rollouts with equal plans
    and the unconditional rows are prefilled once, the unconditional attention skips its padding."""
    ref = base.generate(EIGHT, n=4, seed=5, fast=False, cfg=cfg, keep_logits=True)
    new = base.generate(EIGHT, n=4, seed=5, cfg=cfg, keep_logits=True)
    assert len(ref) >= 2 * MIN_ROWS
    _same(ref, new)
    for key in ("image_cond", "image_guided"):
        for x, y in zip(ref.extras["logits"][0][key], new.extras["logits"][0][key], strict=True):
            np.testing.assert_allclose(x.numpy(), y.numpy(), **TOL)


@pytest.mark.slow
def test_threaded_image_phase_equals_the_reference(base) -> None:  # noqa: ANN001
    """The image phase split into two parts (two threads, one BLAS thread each) draws the reference tokens, and
    the caller's torch thread count is restored."""
    s = SamplingDefaults()
    ids = base.encode_prompts(EIGHT * 4)
    seeds = list(range(100, 132))
    assert image_parts(len(ids), True, torch.device("cpu"), threads=2) == 2
    with torch.inference_mode():
        want = generate_chunk_reference(base, ids, seeds, s, use_cache=True, record_stats=True, keep_logits=False)
        got = generate_chunk_fast(base, ids, seeds, s, record_stats=True, keep_logits=False, threads=2)
    assert torch.get_num_threads() == 1
    assert got["plans"] == want["plans"]
    assert torch.equal(got["codes"], want["codes"])
    for k in ("logp", "sc", "entropy"):
        torch.testing.assert_close(got["stats"][k], want["stats"][k], **TOL, equal_nan=True)


def test_fast_loop_in_small_chunks_keeps_logits(base) -> None:  # noqa: ANN001
    """Chunks of <= 4 rows (every matmul in the few-rows regime): the reference's tokens and logits at the same
    batch size; the reference's own batch sizes differ from each other by round-off only."""
    ref = base.generate(PROMPTS[:3], n=3, seed=1, fast=False, keep_logits=True, batch_size=4)
    new = base.generate(PROMPTS[:3], n=3, seed=1, batch_size=4, keep_logits=True)  # 3 chunks of <= 4 rows
    _same(ref, new)
    _same(base.generate(PROMPTS[:3], n=3, seed=1, fast=False), new, tol=1e-4)
    got, want = new.extras["logits"][0], ref.extras["logits"][0]
    # image logits kept for every row; plan logits for rows still writing (NaN for finished rows)
    np.testing.assert_allclose(got["image_cond"][0].numpy(), want["image_cond"][0].numpy(), **TOL)
    live = ~np.isnan(got["plan"][-1].numpy()).all(1)
    assert live.any() and not live.all()
    np.testing.assert_allclose(got["plan"][-1].numpy()[live], want["plan"][-1].numpy()[live], **TOL)


def test_continue_plan_agrees_up_to_round_off(base) -> None:  # noqa: ANN001
    ref = base.generate(PROMPTS, n=3, seed=3, fast=False)
    new = base.generate(PROMPTS, n=3, seed=3, continue_plan=True)
    assert ref.plans == new.plans  # the plan phase is exact; only the image's prefix cache is computed otherwise
    same_rows = (ref.tokens == new.tokens).all(1)
    assert same_rows.mean() >= 0.9  # a flip needs a uniform within ~1e-5 of a CDF step
    m = ref.token_mask[same_rows]
    np.testing.assert_allclose(ref.self_certainty[same_rows][m], new.self_certainty[same_rows][m], atol=1e-4)


def test_an_unknown_loop_is_refused(base) -> None:  # noqa: ANN001
    with pytest.raises(UsageError, match="fast must be"):
        base.generate(PROMPTS[:1], fast="compiled")


def test_parts_run_in_threads_and_failures_surface() -> None:
    seen: list[int] = []
    shapes_decode._run_parts([lambda: seen.append(torch.get_num_threads()), lambda: seen.append(2)])
    assert sorted(seen) == [1, 2] and torch.get_num_threads() == 1

    def boom() -> None:
        raise RuntimeError("part failed")

    with pytest.raises(RuntimeError, match="part failed"):
        shapes_decode._run_parts([lambda: None, boom])
    assert image_parts(64, True, "cuda", threads=8) == 1  # the split is for CPU threads only
    assert image_parts(8, True, torch.device("cpu"), threads=2) == 1  # parts keep >= 32 decode rows


def test_models_the_decode_step_does_not_reproduce_use_the_reference_loop() -> None:
    model = build_model(50, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    assert supports_fast_decode(model)
    assert not supports_fast_decode(build_model(50, hidden_size=16, num_layers=1, num_heads=2,
                                                intermediate_size=32).to(torch.bfloat16))
    model.config.hidden_act = "gelu"
    assert not supports_fast_decode(model)
    assert not supports_fast_decode(object())


def test_the_sgemm_probe_sees_a_row_count_dependent_rounding(monkeypatch) -> None:  # noqa: ANN001
    """The probe is what lets the tests above demand bit-identity: it must say no when a product's rows round
    differently with the row count (here: the last bit of every row of a >= 17-row product flipped)."""
    import torch.nn.functional as F

    probe = sgemm_rows_invariant.__wrapped__
    assert isinstance(probe(), bool) and probe() == EXACT
    linear = F.linear

    def uneven(x, w, b=None):  # noqa: ANN001, ANN202
        y = linear(x, w, b)
        return y if x.shape[0] <= MIN_ROWS else torch.nextafter(y, torch.full_like(y, float("inf")))

    monkeypatch.setattr(F, "linear", uneven)
    assert probe() is False
