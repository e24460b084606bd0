"""Self-certainty, entropy and masked aggregation against direct float64 computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from irisbench.core.uncertainty import (
    entropy,
    masked_mean,
    modality_means,
    part_mask,
    per_sample,
    self_certainty,
    token_stats,
)
from irisbench.policies.base import IMAGE, TEXT


def ref_sc(z: torch.Tensor) -> torch.Tensor:
    """KL(U || p) = sum_v (1/V) log((1/V) / p_v), from log-probabilities in float64."""
    logp = torch.log_softmax(z.double(), dim=-1)
    v = z.shape[-1]
    return (-math.log(v) - logp).mean(dim=-1)


def ref_entropy(z: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(z.double(), dim=-1)
    logp = torch.log_softmax(z.double(), dim=-1)
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(dim=-1)


def test_self_certainty_matches_probability_definition() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 50, generator=g) * 3
    p = torch.softmax(z.double(), dim=-1)
    v = z.shape[-1]
    direct = (1.0 / v * torch.log((1.0 / v) / p)).sum(dim=-1)  # KL(U || p) straight from probabilities
    sc = self_certainty(z)
    assert sc.dtype == torch.float32 and sc.shape == (2, 3)
    torch.testing.assert_close(sc.double(), direct, rtol=1e-5, atol=1e-5)
    assert (sc >= 0).all()
    raw = self_certainty(z, subtract_log_vocab=False)
    torch.testing.assert_close(raw.double(), direct + math.log(v), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(raw, torch.logsumexp(z, -1) - z.mean(-1), rtol=1e-6, atol=1e-5)


def test_entropy_matches_probability_definition() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(4, 7, 33, generator=g) * 2
    h = entropy(z)
    assert h.dtype == torch.float32 and h.shape == (4, 7)
    torch.testing.assert_close(h.double(), ref_entropy(z), rtol=1e-5, atol=1e-5)
    assert (h <= math.log(33) + 1e-5).all() and (h >= 0).all()


@pytest.mark.parametrize(
    ("dtype", "scale"),
    [(torch.float16, 2e4), (torch.bfloat16, 1e4), (torch.bfloat16, 1e30), (torch.float32, 1e6)],
)
def test_extreme_logits_low_precision_inputs(dtype: torch.dtype, scale: float) -> None:
    g = torch.Generator().manual_seed(2)
    z = (
        (torch.randn(3, 200, generator=g) * scale).clamp(-6e4, 6e4)
        if dtype == torch.float16
        else (torch.randn(3, 200, generator=g) * scale)
    )
    z = z.to(dtype)
    assert torch.isfinite(z).all()
    sc, h = self_certainty(z), entropy(z)
    assert sc.dtype == torch.float32 and h.dtype == torch.float32
    assert torch.isfinite(sc).all() and torch.isfinite(h).all()
    torch.testing.assert_close(sc.double(), ref_sc(z), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(h.double(), ref_entropy(z), rtol=1e-4, atol=1e-4)


def test_peaked_distribution() -> None:
    z = torch.zeros(1, 1000, dtype=torch.float16)
    z[0, 3] = 60000.0  # one token with all the mass, within fp16 range
    sc = self_certainty(z)
    # KL(U || p) = -log V - mean(log p) with log p = -60000 off the peak, ~0 on it
    expected = -math.log(1000) + 60000.0 * 999 / 1000
    assert sc.item() == pytest.approx(expected, rel=1e-6)
    assert entropy(z).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("value", [0.0, -7.25, 1e4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_uniform_logits_give_zero(value: float, dtype: torch.dtype) -> None:
    for v in (2, 16384, 102400):
        z = torch.full((2, v), value, dtype=dtype)
        assert self_certainty(z).abs().max().item() < 1e-5
        assert self_certainty(z, subtract_log_vocab=False)[0].item() == pytest.approx(math.log(v), abs=1e-5)
        assert entropy(z)[0].item() == pytest.approx(math.log(v), rel=1e-5)


def test_masked_logits() -> None:
    z = torch.tensor([[1.0, 2.0, float("-inf"), 0.5]])
    assert torch.isinf(self_certainty(z)).all()  # KL(U || p) is infinite when p has zeros
    torch.testing.assert_close(entropy(z).double(), ref_entropy(z[:, [0, 1, 3]]), rtol=1e-6, atol=1e-6)


def test_self_certainty_gradient() -> None:
    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, 11, generator=g, requires_grad=True)
    self_certainty(z).sum().backward()
    # d/dz [logsumexp(z) - mean(z)] = softmax(z) - 1/V
    torch.testing.assert_close(z.grad, torch.softmax(z.detach(), -1) - 1.0 / 11, rtol=1e-5, atol=1e-6)


def test_token_stats() -> None:
    g = torch.Generator().manual_seed(4)
    z = torch.randn(2, 3, 17, generator=g).to(torch.bfloat16)
    chosen = torch.randint(0, 17, (2, 3), generator=g)
    logp, sc_raw, h = token_stats(z, chosen)
    expected = torch.log_softmax(z.double(), -1).gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logp.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sc_raw.double(), ref_sc(z) + math.log(17), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h.double(), ref_entropy(z), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="chosen has shape"):
        token_stats(z, chosen[:, :2])
    with pytest.raises(ValueError, match="integer token ids"):
        token_stats(z, chosen.float())


def test_masked_mean_and_empty_rows() -> None:
    values = np.array([[1.0, 2.0, 3.0, float("nan")], [5.0, float("inf"), 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
    out = masked_mean(values, mask)
    assert out[0] == pytest.approx(2.0) and out[1] == pytest.approx(5.0)
    assert math.isnan(out[2])  # empty mask -> NaN, never a silent 0
    with pytest.raises(ValueError, match="mask shape"):
        masked_mean(values, mask[:, :2])


def test_per_sample_parts_and_batch_modality_means() -> None:
    values = np.array([[12.0, 13.0, 10.0, 11.0, 12.0], [11.5, 9.0, 11.0, 99.0, 99.0]])
    modality = np.array([[TEXT, TEXT, IMAGE, IMAGE, IMAGE], [TEXT, IMAGE, IMAGE, IMAGE, TEXT]])
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=bool)
    np.testing.assert_allclose(per_sample(values, modality, mask, "text"), [12.5, 11.5])
    np.testing.assert_allclose(per_sample(values, modality, mask, "image"), [11.0, 10.0])
    np.testing.assert_allclose(per_sample(values, modality, mask, "all"), [11.6, 31.5 / 3])
    # a batch's mean per modality pools the tokens of every row (text: 12, 13, 11.5; image: 10, 11, 12, 9, 11)
    means = modality_means(values, modality, mask)
    assert means == {"text": pytest.approx(36.5 / 3), "image": pytest.approx(53 / 5)}
    only_image = np.full_like(modality, IMAGE)
    assert math.isnan(per_sample(values, only_image, mask, "text")[0])
    assert math.isnan(modality_means(values, only_image, mask)["text"])
    with pytest.raises(ValueError, match="part must be one of"):
        part_mask(modality, mask, "cot")  # type: ignore[arg-type]


# ------------------------------------------------------------------ chunked statistics from a head


def _head_case(seed: int = 0, v: int = 97, d: int = 16):
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(d, v, bias=True)
    with torch.no_grad():
        head.weight.copy_(torch.randn(v, d, generator=g))
        head.bias.copy_(torch.randn(v, generator=g))
    hidden = torch.randn(3, 11, d, generator=g, requires_grad=True)
    chosen = torch.randint(0, v, (3, 11), generator=g)
    return head, hidden, chosen


@pytest.mark.parametrize("chunk", [1, 4, 33, 1000])
def test_head_token_stats_equal_the_unchunked_values_and_gradients(chunk: int) -> None:
    from irisbench.core.uncertainty import head_token_stats

    head, hidden, chosen = _head_case()
    weights = torch.tensor([1.0, -0.3, 0.2])  # a loss touching all three statistics

    def loss_and_grads(stats):
        loss = sum(w * s.sum() for w, s in zip(weights, stats, strict=True))
        grads = torch.autograd.grad(loss, [hidden, head.weight, head.bias])
        return [s.detach() for s in stats], grads

    ref, ref_g = loss_and_grads(token_stats(head(hidden), chosen))
    got, got_g = loss_and_grads(head_token_stats(hidden, head, chosen, chunk_size=chunk))
    for a, b in zip(got, ref, strict=True):
        assert a.shape == (3, 11) and a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-5)
    for a, b in zip(got_g, ref_g, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # the statistics are the float64 definitions, too
    logp64 = torch.log_softmax(head(hidden).double(), -1).gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(got[0].double(), logp64.detach(), rtol=0, atol=1e-4)


def test_head_token_stats_without_grad_and_bad_input() -> None:
    from irisbench.core.uncertainty import head_token_stats

    head, hidden, chosen = _head_case(1)
    with torch.no_grad():
        got = head_token_stats(hidden, head, chosen, chunk_size=5)
        ref = token_stats(head(hidden), chosen)
    assert not any(t.requires_grad for t in got)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-5)
    empty = head_token_stats(hidden[:, :0], head, chosen[:, :0])
    assert all(t.shape == (3, 0) for t in empty)
    with pytest.raises(ValueError, match="chosen has shape"):
        head_token_stats(hidden, head, chosen[:, :3])
    with pytest.raises(ValueError, match="chunk_size"):
        head_token_stats(hidden, head, chosen, chunk_size=0)


def test_head_token_stats_never_holds_every_positions_logits() -> None:
    """Saved-for-backward tensors stay at one chunk's logits: count the largest saved tensor."""
    from irisbench.core.uncertainty import head_token_stats

    head, _, _ = _head_case(2, v=4096, d=8)
    hidden = torch.randn(64, 8, requires_grad=True)
    chosen = torch.randint(0, 4096, (64,))
    sizes: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        stats = head_token_stats(hidden, head, chosen, chunk_size=8)
    assert max(sizes) < 64 * 4096  # the unchunked graph saves (64, 4096) logits; checkpointing saves inputs
    stats[0].sum().backward()
    sizes.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        token_stats(head(hidden), chosen)
    assert max(sizes) >= 64 * 4096  # the check can fail: the plain computation does save them
