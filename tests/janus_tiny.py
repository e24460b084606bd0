"""A tiny random Janus checkpoint built offline, for tests of ``irisbench.policies.janus``.

``build_tiny_janus(folder)`` trains a byte-level BPE tokenizer on a few sentences with the
``tokenizers`` library, builds a ``JanusForConditionalGeneration`` with a 2-layer, 64-wide Llama, an
4x4 image-token grid (16 tokens) over a 96-entry codebook and an 8 px VQ decoder, and saves model,
generation config and processor with ``save_pretrained`` (safetensors), so that the folder loads back
through ``JanusPolicy.from_pretrained`` exactly as a real Janus-Pro folder would.

Dimension rules (docs/dependencies.md §2): ``vq_config.projection_dim`` and ``image_token_embed_dim`` equal
the LLM hidden size; ``vision_config.num_image_tokens == (image_size // patch_size) ** 2``;
``base_channels >= 32`` (GroupNorm(32)). The image codebook (96) differs from the text vocabulary on
purpose, so that a mix-up of the two heads fails loudly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ["<bos>", "<eos>", "<pad>", "<image_placeholder>", "<begin_of_image>", "<end_of_image>"]
HIDDEN = 64
GRID = 4  # 4 x 4 = 16 image tokens
CODEBOOK = 96
WEIGHT_STD = 0.25

_CORPUS = [
    "<|User|>: a photo of a red cube to the left of a blue sphere\n\n<|Assistant|>:",
    "You are a helpful assistant that receives an image prompt and generate a visualization of the prompt.",
    "A green cat sits above two yellow dogs. Three purple triangles are below an orange circle.",
    "Provide a brief, precise visualization of all elements in the prompt. Do not miss objects.",
    "black white brown pink gray square star heart, in front of, behind, next to, on top of",
]


def build_tokenizer():
    """A byte-level BPE tokenizer (about 330 entries) that adds BOS like the real Janus tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=330,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 10, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 0)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        extra_special_tokens={
            "image_token": "<image_placeholder>",
            "boi_token": "<begin_of_image>",
            "eoi_token": "<end_of_image>",
        },
    )


def build_tiny_janus(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny random Janus (model, generation config, processor) into ``folder``; return it."""
    import torch
    from transformers import (
        GenerationConfig,
        JanusConfig,
        JanusForConditionalGeneration,
        JanusImageProcessor,
        JanusProcessor,
        JanusVisionConfig,
        JanusVQVAEConfig,
        LlamaConfig,
    )

    folder = Path(folder)
    tokenizer = build_tokenizer()
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    boi = tokenizer.convert_tokens_to_ids("<begin_of_image>")
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    vision_config = JanusVisionConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=GRID * 4,
        patch_size=4,
        num_image_tokens=GRID * GRID,
        projection_dim=HIDDEN,
    )
    vq_config = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=CODEBOOK,
        latent_channels=32,
        base_channels=32,
        channel_multiplier=[1, 2],
        num_res_blocks=1,
        projection_dim=HIDDEN,
        image_token_embed_dim=HIDDEN,
    )
    config = JanusConfig(
        text_config=text_config,
        vision_config=vision_config,
        vq_config=vq_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<image_placeholder>"),
    )
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(config).eval()
    # The default init (std 0.02) gives near-uniform, repetitive greedy outputs; wider weights make the
    # token sequences varied, so that parity tests compare something.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2 and "vqmodel" not in name and "vision_model" not in name:
                param.normal_(0.0, WEIGHT_STD)
    # A fresh GenerationConfig survives the save/load round trip (docs/dependencies.md §2, pitfall 3).
    model.generation_config = GenerationConfig(
        bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, generation_kwargs={"boi_token_id": boi}
    )
    model.save_pretrained(folder)
    image_processor = JanusImageProcessor(
        size={"height": GRID * 4, "width": GRID * 4}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    JanusProcessor(image_processor=image_processor, tokenizer=tokenizer, num_image_tokens=GRID * GRID).save_pretrained(
        folder
    )
    return folder


# the released Janus-Pro-1B config's sizes, and a smoke-check size
JANUS_PRO_1B = {"vocab": 102400, "hidden": 2048, "layers": 24, "heads": 16, "mlp": 5632, "codes": 16384,
                "grid": 24, "vq_base": 128, "vq_mult": [1, 1, 2, 2, 4]}
SMALL_JANUS = {"vocab": 4096, "hidden": 128, "layers": 2, "heads": 4, "mlp": 256, "codes": 512, "grid": 8,
               "vq_base": 32, "vq_mult": [1, 2]}


def build_sized_janus(folder: Path, sizes: dict[str, Any], seed: int = 0) -> Path:
    """A random Janus-Pro-sized folder loadable by ``JanusPolicy.from_pretrained`` (bf16 weights on disk)."""
    import torch
    from transformers import (
        GenerationConfig,
        JanusConfig,
        JanusForConditionalGeneration,
        JanusImageProcessor,
        JanusProcessor,
        JanusVisionConfig,
        JanusVQVAEConfig,
        LlamaConfig,
    )

    tok = build_tokenizer()
    bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    boi = tok.convert_tokens_to_ids("<begin_of_image>")
    h, grid = sizes["hidden"], sizes["grid"]
    patch = 16
    text = LlamaConfig(vocab_size=sizes["vocab"], hidden_size=h, intermediate_size=sizes["mlp"],
                       num_hidden_layers=sizes["layers"], num_attention_heads=sizes["heads"],
                       num_key_value_heads=sizes["heads"], max_position_embeddings=16384, bos_token_id=bos,
                       eos_token_id=eos, pad_token_id=pad, tie_word_embeddings=False)
    vision = JanusVisionConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=grid * patch,
                               patch_size=patch, num_image_tokens=grid * grid, projection_dim=h)
    vq = JanusVQVAEConfig(num_embeddings=sizes["codes"], embed_dim=8, base_channels=sizes["vq_base"],
                          channel_multiplier=sizes["vq_mult"], projection_dim=h, image_token_embed_dim=h)
    config = JanusConfig(text_config=text, vision_config=vision, vq_config=vq,
                         image_token_id=tok.convert_tokens_to_ids("<image_placeholder>"), tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(config).to(torch.bfloat16).eval()
    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
                                               generation_kwargs={"boi_token_id": boi})
    model.save_pretrained(folder)
    px = grid * 2 ** (len(sizes["vq_mult"]) - 1)
    image_processor = JanusImageProcessor(size={"height": px, "width": px}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    JanusProcessor(image_processor=image_processor, tokenizer=tok, num_image_tokens=grid * grid).save_pretrained(folder)
    return folder
