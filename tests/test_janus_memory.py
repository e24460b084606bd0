"""benchmarks/janus_memory.py: the parameter counts against transformers, and the arithmetic by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from janus_memory import SIZES, JanusSize, Recipe, predict, table  # noqa: E402


@pytest.mark.parametrize("name", ["janus-pro-1b", "janus-pro-7b"])
def test_trainable_count_equals_an_untied_llama_of_the_released_sizes(name: str) -> None:
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    s = SIZES[name]
    config = LlamaConfig(vocab_size=s.vocab, hidden_size=s.hidden, num_hidden_layers=s.layers,
                         num_attention_heads=s.heads, num_key_value_heads=s.kv, intermediate_size=s.mlp,
                         tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    assert s.trainable() == sum(p.numel() for p in model.parameters())


def test_released_1b_count_by_hand() -> None:
    # per block: q, o 2 x 2048^2; k, v 2 x 2048^2; gate, up, down 3 x 2048 x 5632; two norms 2 x 2048
    assert SIZES["janus-pro-1b"].block_params() == 8_388_608 + 8_388_608 + 34_603_008 + 4_096
    assert SIZES["janus-pro-1b"].trainable() == 24 * 51_384_320 + 2048 + 2 * 102_400 * 2048 == 1_652_656_128


def test_prediction_arithmetic_by_hand() -> None:
    s = JanusSize("toy", hidden=4, layers=2, heads=2, kv_heads=1, mlp=8, pad_id=0, vocab=10, codes=6,
                  frozen_other=100)
    # block: 2*16 (q, o) + 2*4*2 (k, v at width 2) + 3*32 + 8 = 32 + 16 + 96 + 8 = 152
    assert s.block_params() == 152
    assert s.trainable() == 2 * 152 + 4 + 2 * 10 * 4 == 388 and s.total() == 488
    r = Recipe(rollouts=8, grad_accum=2, cot_tokens=3, cot_prompt=5, image_prompt=2, image_tokens=4,
               sample_batch=1, beta=0.01, logits_chunk=2)
    p = predict(s, 2, r)
    gb = 1e9
    assert p["micro_batch_rows"] == 2  # 8 rollouts / 2 GPUs / 2 accumulation steps
    assert p["params"] == round(488 * 2 / 2 / gb, 2)
    # exact bytes, before rounding to GB: recompute the peak by hand
    params, ref, grads, adamw = 488.0, 488.0, 388.0, 776.0
    gathered = 488 * 2 * 1 / 2
    img_len = 2 + 3 + 4
    kv = 2 * 2 * 2 * 1 * 2 * img_len * 2  # K and V, layers, CFG rows, width 2, length, bf16
    tokens = 2 * ((5 + 3) + img_len)
    acts = tokens * 2 * (2 * (8 * 4 + 4 * 8))
    logits = 4 * 2 * 10 * 4 + 2 * 4 * 6 * 4
    peak = params + ref + grads + adamw + max(gathered + kv, acts + logits)
    assert (kv, acts, logits) == (288, 8704, 512)
    assert p["peak_gb"] == round(peak / gb, 2)
    # checkpointing keeps each block's input plus one block's activations
    q = predict(s, 2, Recipe(**{**r.__dict__, "checkpointing": True}))
    acts_ckpt = tokens * 2 * 2 * 4 + 2 * img_len * (2 * (8 * 4 + 4 * 8))
    assert round(acts_ckpt / gb, 2) == q["activations"] and acts_ckpt < acts
    with pytest.raises(ValueError, match="gpus"):
        predict(s, 0, r)


def test_table_shrinks_with_more_gpus_and_7b_needs_sharding() -> None:
    t = table(Recipe())
    for name in SIZES:
        peaks = [row["peak_gb"] for row in t[name]["per_gpu"]]
        assert peaks == sorted(peaks, reverse=True)
    one = t["janus-pro-7b"]["per_gpu"][0]
    # 7B on one GPU: weights, reference, gradient and two moments alone are 5 x 2 bytes x ~7 B parameters
    assert one["params"] + one["reference"] + one["grads"] + one["adamw"] > 65


def test_lora_parameter_count_equals_peft_on_a_small_llama() -> None:
    torch = pytest.importorskip("torch")
    from janus_memory import lora_parameters
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    s = JanusSize("toy", hidden=64, layers=3, heads=4, kv_heads=2, mlp=96, pad_id=0, vocab=50)
    config = LlamaConfig(vocab_size=s.vocab, hidden_size=s.hidden, num_hidden_layers=s.layers,
                         num_attention_heads=s.heads, num_key_value_heads=s.kv, intermediate_size=s.mlp)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    with torch.random.fork_rng(devices=[]):
        model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=8, target_modules=targets))
    adapters = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    # by hand, per block: 8 * (64+64 + 64+32 + 64+32 + 64+64 + 64+96 + 64+96 + 96+64) = 8 * 928
    assert lora_parameters(s, r=8) == adapters == 3 * 8 * 928


def test_lora_prediction_drops_the_reference_and_shrinks_the_state() -> None:
    from janus_memory import lora_parameters, predict_lora

    s = SIZES["janus-pro-7b"]
    full, lora = predict(s, 1, Recipe()), predict_lora(s, 1, Recipe())
    assert lora["reference"] == 0.0 and lora["gathered"] == 0.0 and lora["params"] == full["params"]
    assert lora["grads"] == round(lora_parameters(s) * 4 / 1e9, 2)  # fp32 adapters
    assert lora["adamw"] == round(lora_parameters(s) * 8 / 1e9, 2)
    assert lora["activations"] > full["activations"]  # each adapter keeps its own fp32 input
    ckpt = predict_lora(s, 1, Recipe(checkpointing=True))
    assert ckpt["peak_gb"] < 80 < predict(s, 1, Recipe(checkpointing=True))["peak_gb"]


@pytest.mark.parametrize("name", ["janus-pro-1b", "janus-pro-7b"])
def test_the_formula_and_the_dry_run_share_one_shape(name: str) -> None:
    """One ``JanusSize`` (irisbench/dryrun/sizes.py): the formula's trainable count is the dry run's built model's,
    and its frozen-tower estimate is within 5% of the built towers."""
    torch = pytest.importorskip("torch")
    from irisbench.dryrun import weightless

    assert JanusSize is weightless.JanusSize and SIZES is weightless.JANUS_SIZES
    s = SIZES[name]
    model = weightless.build_model(weightless.janus_config(s), "meta", torch.bfloat16)
    lm = model.model.language_model
    assert sum(p.numel() for p in lm.parameters()) + model.lm_head.weight.numel() == s.trainable()
    built = sum(p.numel() for p in model.parameters())
    assert abs(built - s.total()) < 0.05 * (built - s.trainable())
