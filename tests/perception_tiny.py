"""Tiny random perception models built offline, for tests of ``irisbench.scorers.{geneval,compbench}_real``.

Each builder writes a folder with ``save_pretrained`` (safetensors) that loads back through the project's
classes exactly as a real checkpoint folder would:

- ``build_tiny_mask2former``: Mask2Former with a 1-block-per-stage Swin backbone (embed 16), 8 queries and
  the 80 COCO instance labels spelt as the HF COCO checkpoints spell them ("mouse", "remote", "keyboard").
- ``build_tiny_blip_vqa``: BLIP VQA with 1-layer 32-wide vision/text towers and a BERT WordPiece tokenizer
  built with the ``tokenizers`` library, holding "yes", "no", ``[DEC]`` (decoder BOS) and ``[ENC]``.
- ``build_tiny_owlv2``: OWLv2 with 1-layer 32-wide towers and the real CLIP BPE (open_clip's bundled vocab).
- ``register_tiny_open_clip``: a 1-layer open_clip config registered via ``open_clip.add_model_config``,
  with random weights saved to a safetensors file usable as ``pretrained=``.

Weights are random (seeded), so outputs are meaningless but deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path

from irisbench.protocols.geneval import COCO_CLASSES

TINY_CLIP_NAME = "irisbench-tiny-clip"
BLIP_WORDS = [
    "a", "an", "the", "red", "blue", "green", "cube", "ball", "metallic", "wooden", "and", "of", "on", "is",
    "there", "?", "yes", "no", "bird", "car", "##s",
]
_HF_COCO = {"computer mouse": "mouse", "tv remote": "remote", "computer keyboard": "keyboard"}


def coco_id2label() -> dict[int, str]:
    """COCO instance labels as HF's COCO Mask2Former configs spell them (GenEval renames undone)."""
    return {i: _HF_COCO.get(name, name) for i, name in enumerate(COCO_CLASSES)}


def build_tiny_mask2former(folder: Path, *, seed: int = 0, num_queries: int = 8,
                           id2label: dict[int, str] | None = None) -> Path:
    import torch
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
        SwinConfig,
    )

    labels = coco_id2label() if id2label is None else id2label
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                          window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(
        backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32,
        encoder_feedforward_dim=64, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
        dim_feedforward=64, num_queries=num_queries, num_labels=len(labels), id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    torch.manual_seed(seed)
    model = Mask2FormerForUniversalSegmentation(config).eval()
    model.save_pretrained(folder)
    Mask2FormerImageProcessor().save_pretrained(folder)
    return Path(folder)


def build_bert_tokenizer(words: list[str] = BLIP_WORDS):
    """A lowercasing BERT WordPiece tokenizer: specials, ``words``, then ``[DEC]`` and ``[ENC]`` last."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {w: i for i, w in enumerate(specials + words + ["[DEC]", "[ENC]"])}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]", bos_token="[DEC]",
                             extra_special_tokens=["[ENC]"])


def build_tiny_blip_vqa(folder: Path, *, seed: int = 0, image_size: int = 32) -> Path:
    import torch
    from transformers import BlipConfig, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

    tokenizer = build_bert_tokenizer()
    vocab = tokenizer.get_vocab()
    config = BlipConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64,
                         bos_token_id=vocab["[DEC]"], pad_token_id=vocab["[PAD]"], sep_token_id=vocab["[SEP]"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
    )
    torch.manual_seed(seed)
    model = BlipForQuestionAnswering(config).eval()
    # Spread the LM head so that first-step probabilities are far from uniform.
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias.normal_(0.0, 2.0)
    model.save_pretrained(folder)
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
                              tokenizer=tokenizer)
    processor.save_pretrained(folder)
    return Path(folder)


def build_clip_tokenizer():
    """An HF ``CLIPTokenizer`` with the real CLIP BPE, built from open_clip's bundled vocabulary."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    simple = SimpleTokenizer()
    merges = [pair for pair, _ in sorted(simple.bpe_ranks.items(), key=lambda kv: kv[1])]
    return CLIPTokenizer(vocab=dict(simple.encoder), merges=merges, bos_token="<start_of_text>",
                         eos_token="<end_of_text>", pad_token="<end_of_text>", unk_token="<end_of_text>")


def build_tiny_owlv2(folder: Path, *, seed: int = 0, image_size: int = 32) -> Path:
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    config = Owlv2Config(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config).eval()
    # Damp the heads (initialised with std 1): boxes then sit near their patch-grid priors and scores spread
    # over (0, 1) instead of saturating.
    with torch.no_grad():
        for head in (model.class_head, model.box_head):
            for module in head.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight.mul_(0.1)
    model.save_pretrained(folder)
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": image_size, "width": image_size}),
                               tokenizer=build_clip_tokenizer())
    processor.save_pretrained(folder)
    return Path(folder)


def register_tiny_open_clip(folder: Path, *, seed: int = 0, image_size: int = 32) -> Path:
    """Register ``TINY_CLIP_NAME`` with open_clip and save random weights; returns the weights file."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"embed_dim": 32,
              "vision_cfg": {"image_size": image_size, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    config_path = folder / f"{TINY_CLIP_NAME}.json"
    config_path.write_text(json.dumps(config))
    open_clip.add_model_config(config_path)
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    weights = folder / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return weights
