"""Tiny random preference models of the real architectures, for tests of ``irisbench.metrics.preference``.

``build_tiny_pickscore(folder)``: a ``transformers`` CLIPModel (PickScore_v1's class) from a CLIPConfig with
tiny towers (32-d, 2 layers, 32 px images, 16 text positions) and a CLIPProcessor whose tokenizer has a
hand-written byte-level BPE vocabulary (lower-case letters, no merges), saved with ``save_pretrained``.
``build_tiny_hps(folder)``: a state dict of the tiny open_clip model of ``clip_tiny.py`` (HPS v2.1's loader
reads any open_clip state dict), saved as HPS's ``{"state_dict": ...}`` pickle and as ``.safetensors``.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from clip_tiny import register_tiny_clip


def build_tiny_pickscore(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    letters = list(string.ascii_lowercase)
    tokens = letters + [c + "</w>" for c in letters] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": bos,
                     "eos_token_id": eos, "pad_token_id": eos},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=24, logit_scale_init_value=3.0)
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_hps(folder: Path, seed: int = 0) -> tuple[str, Path, Path]:
    """(open_clip backbone name, pickle file, safetensors file) of a random tiny open_clip model."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = register_tiny_clip(folder)
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    pt, st = folder / "HPS_tiny.pt", folder / "HPS_tiny.safetensors"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 1}, pt)
    save_file(state, str(st))
    return name, pt, st
