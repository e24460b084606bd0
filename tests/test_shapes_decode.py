"""The fast sampling loop (static cache, hand-written decode step) against the reference loop.

The reference is ``generate(fast=False)`` (the default): transformers' own Llama forward with a ``DynamicCache``, the
loop that produced the published numbers. Same seeds must give the same tokens and the same per-token
statistics (to 1e-5), with and without CFG, guided statistics, top-k and a forced end of plan.
"""

from __future__ import annotations

import numpy as np
import pytest

from irisbench.policies.shapes_decode import supports_fast_decode
from irisbench.policies.shapes_lm import build_model, load_shipped_base

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module

PROMPTS = ["a photo of a red circle", "a photo of three squares", "a photo of a diamond left of a triangle",
           "a photo of an orange diamond and a white circle", "a photo of a square below a circle"]


@pytest.fixture(scope="module")
def base():  # noqa: ANN201
    return load_shipped_base()


def _same(a, b, tol: float = 1e-5) -> None:  # noqa: ANN001
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.token_mask, b.token_mask)
    np.testing.assert_array_equal(a.modality, b.modality)
    np.testing.assert_array_equal(a.extras["plan_truncated"], b.extras["plan_truncated"])
    assert a.plans == b.plans
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images, strict=True))
    m = a.token_mask
    for field in ("logp", "self_certainty", "entropy"):
        np.testing.assert_allclose(getattr(a, field)[m], getattr(b, field)[m], atol=tol, rtol=0, err_msg=field)


@pytest.mark.slow
@pytest.mark.parametrize(("kw"), [
    {"cfg": 3.0},  # the GRPO setting: CFG rows, conditional statistics
    {"cfg": 5.0, "stats_source": "guided", "top_k": 50, "temperature": 1.2},
    {"cfg": 1.0},  # no unconditional rows
    {"cfg": 3.0, "max_plan_tokens": 6},  # long plans hit the cap: EOP forced
])
def test_fast_loop_draws_the_reference_tokens(base, kw: dict) -> None:  # noqa: ANN001
    ref = base.generate(PROMPTS, n=2, seed=7, fast=False, **kw)
    new = base.generate(PROMPTS, n=2, seed=7, fast=True, **kw)
    _same(ref, new)
    if "max_plan_tokens" in kw:
        assert ref.extras["plan_truncated"].any()  # the forced-EOP path was exercised


def test_fast_loop_is_batch_split_invariant_and_keeps_logits(base) -> None:  # noqa: ANN001
    ref = base.generate(PROMPTS[:3], n=3, seed=1, fast=False, keep_logits=True)
    new = base.generate(PROMPTS[:3], n=3, seed=1, batch_size=4, keep_logits=True,
                         fast=True)  # 3 chunks of <= 4 rows
    _same(ref, new)
    got, want = new.extras["logits"][0], ref.extras["logits"][0]
    # image logits kept for every row; plan logits for rows still writing (NaN for finished rows)
    np.testing.assert_allclose(got["image_cond"][0].numpy(), want["image_cond"][0][:4].numpy(), atol=1e-5)
    live = ~np.isnan(got["plan"][-1].numpy()).all(1)
    assert live.any()
    np.testing.assert_allclose(got["plan"][-1].numpy()[live], want["plan"][len(got["plan"]) - 1][:4].numpy()[live],
                               atol=1e-5)


def test_continue_plan_agrees_up_to_round_off(base) -> None:  # noqa: ANN001
    ref = base.generate(PROMPTS, n=3, seed=3, fast=False)
    new = base.generate(PROMPTS, n=3, seed=3, fast=True, continue_plan=True)
    same_rows = (ref.tokens == new.tokens).all(1)
    assert same_rows.mean() >= 0.9  # a flip needs a uniform within ~1e-5 of a CDF step
    m = ref.token_mask[same_rows]
    np.testing.assert_allclose(ref.self_certainty[same_rows][m], new.self_certainty[same_rows][m], atol=1e-4)


def test_models_the_decode_step_does_not_reproduce_use_the_reference_loop() -> None:
    model = build_model(50, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    assert supports_fast_decode(model)
    model.config.hidden_act = "gelu"
    assert not supports_fast_decode(model)
    assert not supports_fast_decode(object())
