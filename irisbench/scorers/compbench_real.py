"""T2I-CompBench perception on real images: BLIP-VQA yes/no probabilities, an open-vocabulary detector,
and CLIP cosine similarity. Perception only: the category rules live in ``irisbench.protocols.compbench``.

See docs/protocols.md §2.3-2.7 for the official pipeline these stand in for.

``BlipVQA`` follows T2I-CompBench's ``BLIP_VQA.vqa_prob`` (``BLIPvqa_eval/models/blip_vqa.py``):

- questions normalised like BLIP's ``pre_question`` (lowercase, ``.!"()*#:;~`` deleted, trailing spaces
  stripped), tokenised with padding to the longest and truncation at 35 tokens, the first token replaced by
  ``[ENC]`` when the tokenizer has it;
- image -> ViT; question encoder cross-attends to the image; the answer decoder is run for exactly one step
  from the ``[DEC]`` BOS (``config.text_config.bos_token_id``, 30522 for the real model), cross-attending to
  the question states with the question's padding mask;
- returns the softmax probabilities of the "yes" and "no" tokens over the whole vocabulary (2748 / 2053 for
  bert-base-uncased, looked up from the tokenizer). The ratio ``p_yes / (p_yes + p_no)`` and the 4-decimal
  rounding are the rules' business.

``BlipForQuestionAnswering.forward`` in transformers 5.23 returns no decoder logits and ``generate``
cross-attends without the question padding mask, so the three sub-modules (``vision_model``,
``text_encoder``, ``text_decoder``) are called directly.

Departures, all deliberate:

- The default BLIP checkpoint is the transformers port ``Salesforce/blip-vqa-capfilt-large``, not the
  original ``model_base_vqa_capfilt_large.pth``; the image size defaults to the checkpoint's own
  ``vision_config.image_size`` (the original runs at 480 px; pass ``image_size=480`` to interpolate the
  position embeddings). Unverified against the original weights.
- ``OpenVocabDetector`` wraps OWLv2 (transformers) as a stand-in for UniDet, whose detectron2 build and
  weights are not available here: it returns (label, box, score) for free-text queries, one label per box
  (the best-scoring query, OWL's convention), boxes clipped to the image, sorted by score. Not UniDet:
  spatial / numeracy numbers will differ from the official ones.
- ``ClipCosine`` uses open_clip (``ViT-B-32``/``openai`` = the same weights as OpenAI ``clip`` ViT-B/32);
  the original runs the model in fp16 on GPU, here fp16 autocast is used on CUDA.
- A NaN from any model raises ``PerceptionError`` instead of becoming a silent 0.
- Weights are read from this machine only (``irisbench.scorers.offline``), never downloaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from irisbench.protocols.compbench import pre_question
from irisbench.scorers.geneval_real import (
    PerceptionError,
    check_finite,
    check_image,
    load_clip_weights,
    resolve_device,
    resolve_dtype,
)
from irisbench.scorers.offline import LOCAL_ONLY, loading

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

DEFAULT_BLIP = "Salesforce/blip-vqa-capfilt-large"
DEFAULT_OWL = "google/owlv2-base-patch16-ensemble"


def _single_token_id(tokenizer: Any, word: str, where: str) -> int:
    pieces = tokenizer.tokenize(word)
    token_id = tokenizer.convert_tokens_to_ids(word)
    if pieces != [word] or token_id is None or token_id == tokenizer.unk_token_id:
        raise PerceptionError(f"{where}: {word!r} is not a single token of the tokenizer (got {pieces})")
    return int(token_id)


class BlipVQA:
    """BLIP VQA (transformers) scored T2I-CompBench style: P(yes), P(no) of the first answer token."""

    def __init__(self, model_id_or_path: str = DEFAULT_BLIP, *, device: str | None = None, dtype: Any = None,
                 image_size: int | None = None, max_question_tokens: int = 35, use_enc_token: bool = True,
                 normalize_questions: bool = True, batch_size: int = 32, yes: str = "yes", no: str = "no") -> None:
        if batch_size < 1 or max_question_tokens < 2:
            raise PerceptionError("batch_size must be positive and max_question_tokens at least 2")
        self.model_id = str(model_id_or_path)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        with loading("compbench-real", "blip", model_id_or_path):
            from transformers import BlipForQuestionAnswering, BlipProcessor

            self.model = BlipForQuestionAnswering.from_pretrained(
                model_id_or_path, use_safetensors=True, dtype=self.dtype, **LOCAL_ONLY
            ).to(self.device).eval()
            self.processor = BlipProcessor.from_pretrained(model_id_or_path, **LOCAL_ONLY)
        self.tokenizer = self.processor.tokenizer
        native = self.model.config.vision_config.image_size
        native = native if isinstance(native, int) else int(native[0])
        self.image_size = int(image_size or native)
        self.interpolate_pos_encoding = self.image_size != native
        self.max_question_tokens = max_question_tokens
        self.normalize_questions = normalize_questions
        self.batch_size = batch_size
        self.bos_id = int(self.model.config.text_config.bos_token_id)
        self.yes_id = _single_token_id(self.tokenizer, yes, self.model_id)
        self.no_id = _single_token_id(self.tokenizer, no, self.model_id)
        enc = self.tokenizer.convert_tokens_to_ids("[ENC]") if use_enc_token else None
        self.enc_id = None if enc is None or enc == self.tokenizer.unk_token_id else int(enc)
        vocab = self.model.text_decoder.cls.predictions.decoder.out_features
        for name, idx in (("[DEC]", self.bos_id), (yes, self.yes_id), (no, self.no_id)):
            if not 0 <= idx < vocab:
                raise PerceptionError(
                    f"{self.model_id}: token id {idx} of {name!r} is outside the vocabulary ({vocab})"
                )

    def describe(self) -> dict[str, Any]:
        return {"model": self.model_id, "image_size": self.image_size, "decoder_bos_id": self.bos_id,
                "yes_id": self.yes_id, "no_id": self.no_id, "enc_id": self.enc_id,
                "max_question_tokens": self.max_question_tokens, "dtype": str(self.dtype).removeprefix("torch.")}

    def _token_ids(self, questions: Sequence[str]) -> list[list[int]]:
        texts = [pre_question(q) if self.normalize_questions else q for q in questions]
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_question_tokens)["input_ids"]
        if self.enc_id is not None:
            ids = [[self.enc_id, *row[1:]] for row in ids]
        return [list(row) for row in ids]

    def _pixels(self, images: Sequence[np.ndarray], first: int) -> torch.Tensor:
        arrays = [check_image(image, f"image {first + i}") for i, image in enumerate(images)]
        pixels = self.processor.image_processor(
            images=arrays, size={"height": self.image_size, "width": self.image_size},
            input_data_format="channels_last", return_tensors="pt",
        )["pixel_values"]
        return pixels.to(self.device, self.dtype)

    def first_token_logits(self, images: Sequence[np.ndarray], questions: Sequence[str]) -> torch.Tensor:
        """(N, vocab) float32 logits of the first answer token, decoder started at ``[DEC]``.

        Questions are batched by token length so that no batch needs padding: transformers 5.23's BLIP text
        cross-attention ignores ``encoder_attention_mask`` (``BlipTextAttention`` hands it over as
        ``attention_mask``, which ``BlipTextSelfAttention`` then replaces by its own ``encoder_attention_mask``
        argument, None, for cross-attention), so padded question tokens would be attended by the decoder,
        unlike the original ``vqa_prob``.
        """
        import torch

        if len(images) != len(questions):
            raise PerceptionError(f"{len(images)} images but {len(questions)} questions")
        vocab = self.model.text_decoder.cls.predictions.decoder.out_features
        ids = self._token_ids(questions)
        groups: dict[int, list[int]] = {}
        for i, row in enumerate(ids):
            groups.setdefault(len(row), []).append(i)
        result = torch.zeros((len(ids), vocab), dtype=torch.float32)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                pixels = torch.cat([self._pixels([images[i]], i) for i in chunk])
                input_ids = torch.tensor([ids[i] for i in chunk], dtype=torch.long, device=self.device)
                mask = torch.ones_like(input_ids)
                with torch.inference_mode():
                    vision = self.model.vision_model(pixel_values=pixels,
                                                     interpolate_pos_encoding=self.interpolate_pos_encoding)
                    image_embeds = vision.last_hidden_state
                    image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
                    question = self.model.text_encoder(input_ids=input_ids, attention_mask=mask,
                                                       encoder_hidden_states=image_embeds,
                                                       encoder_attention_mask=image_mask)
                    bos = torch.full((len(chunk), 1), self.bos_id, dtype=torch.long, device=self.device)
                    answer = self.model.text_decoder(input_ids=bos, encoder_hidden_states=question.last_hidden_state,
                                                     encoder_attention_mask=mask, use_cache=False)
                logits = answer.logits[:, 0, :].float().cpu()
                check_finite(logits, f"BLIP first-token logits of items {chunk}")
                result[chunk] = logits
        return result

    def yes_no_prob(self, images: Sequence[np.ndarray], questions: Sequence[str]) -> list[tuple[float, float]]:
        """Per (image, question): softmax probability of "yes" and of "no" over the full vocabulary."""
        import torch

        probs = torch.softmax(self.first_token_logits(images, questions), dim=-1)
        pairs = probs[:, [self.yes_id, self.no_id]]
        check_finite(pairs, "BLIP yes/no probabilities")
        return [(float(y), float(n)) for y, n in pairs.tolist()]


class BoxDetection(NamedTuple):
    """One open-vocabulary detection: the query text, (x1, y1, x2, y2) in pixels, a [0, 1] score."""

    label: str
    box: tuple[float, float, float, float]
    score: float


class OpenVocabDetector:
    """OWLv2 (transformers) text-queried detection; a stand-in for T2I-CompBench's UniDet."""

    def __init__(self, model_id_or_path: str = DEFAULT_OWL, *, device: str | None = None, dtype: Any = None,
                 threshold: float = 0.1, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise PerceptionError("batch_size must be positive")
        self.model_id = str(model_id_or_path)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.threshold = float(threshold)
        self.batch_size = batch_size
        with loading("compbench-real", "detector", model_id_or_path):
            from transformers import Owlv2ForObjectDetection, Owlv2Processor

            self.model = Owlv2ForObjectDetection.from_pretrained(
                model_id_or_path, use_safetensors=True, dtype=self.dtype, **LOCAL_ONLY
            ).to(self.device).eval()
            self.processor = Owlv2Processor.from_pretrained(model_id_or_path, **LOCAL_ONLY)
        self.max_text_tokens = int(self.model.config.text_config.max_position_embeddings)

    def describe(self) -> dict[str, Any]:
        return {"model": self.model_id, "threshold": self.threshold,
                "labels": "best query per box (OWL convention)", "dtype": str(self.dtype).removeprefix("torch.")}

    def raw(self, images: Sequence[np.ndarray], queries: Sequence[Sequence[str]]) -> list[dict[str, torch.Tensor]]:
        """Per image: ``logits`` (boxes, len(queries[i])) and ``pred_boxes`` (boxes, 4) cxcywh in [0, 1] of
        the padded square."""
        import torch

        out: list[dict[str, torch.Tensor]] = []
        for start in range(0, len(images), self.batch_size):
            arrays = [check_image(image, f"image {start + i}")
                      for i, image in enumerate(images[start : start + self.batch_size])]
            texts = [list(q) for q in queries[start : start + self.batch_size]]
            width = max(len(t) for t in texts)
            padded = [t + [" "] * (width - len(t)) for t in texts]
            tokens = self.processor.tokenizer([q for t in padded for q in t], padding="max_length", truncation=True,
                                              max_length=self.max_text_tokens, return_tensors="pt")
            pixels = self.processor.image_processor(images=arrays, input_data_format="channels_last",
                                                    return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                result = self.model(input_ids=tokens["input_ids"].to(self.device),
                                    attention_mask=tokens["attention_mask"].to(self.device),
                                    pixel_values=pixels.to(self.device, self.dtype))
            logits, boxes = result.logits.float().cpu(), result.pred_boxes.float().cpu()
            for row, text in enumerate(texts):
                check_finite(logits[row, :, : len(text)], f"OWLv2 logits for image {start + row}")
                check_finite(boxes[row], f"OWLv2 boxes for image {start + row}")
                out.append({"logits": logits[row, :, : len(text)], "pred_boxes": boxes[row]})
        return out

    def detect(self, images: Sequence[np.ndarray], queries: Sequence[str] | Sequence[Sequence[str]], *,
               threshold: float | None = None) -> list[list[BoxDetection]]:
        """Detections per image for its text queries (one list shared by all images, or one per image),
        score = sigmoid of the best query's logit, kept if > ``threshold``, most confident first."""
        import torch

        if queries and isinstance(queries[0], str):
            per_image: list[Sequence[str]] = [list(queries)] * len(images)  # type: ignore[list-item]
        else:
            per_image = [list(q) for q in queries]  # type: ignore[arg-type]
        if len(per_image) != len(images):
            raise PerceptionError(f"{len(images)} images but {len(per_image)} query lists")
        for i, q in enumerate(per_image):
            if not q or not all(isinstance(s, str) and s.strip() for s in q):
                raise PerceptionError(f"image {i}: queries must be a non-empty list of non-blank strings, got {q!r}")
        cut = self.threshold if threshold is None else float(threshold)
        results = []
        for image, q, raw in zip(images, per_image, self.raw(images, per_image), strict=True):
            h, w = np.asarray(image).shape[:2]
            best, label = raw["logits"].max(dim=-1)
            scores = best.sigmoid()
            cx, cy, bw, bh = raw["pred_boxes"].unbind(-1)
            side = float(max(h, w))  # OWLv2 pads to a square before resizing
            corners = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1) * side
            corners[:, 0::2] = corners[:, 0::2].clamp(0, w)
            corners[:, 1::2] = corners[:, 1::2].clamp(0, h)
            order = torch.sort(scores, descending=True, stable=True).indices
            results.append([BoxDetection(q[int(label[j])], tuple(float(v) for v in corners[j].tolist()),
                                         float(scores[j])) for j in order.tolist() if float(scores[j]) > cut])
        return results


class ClipCosine:
    """Raw CLIP cosine similarity between images and texts (T2I-CompBench non-spatial): no x100, no clip."""

    def __init__(self, clip_model: Any, tokenizer: Callable[[list[str]], Any],
                 preprocess: Callable[[Any], torch.Tensor], *, device: str | None = None, amp: bool | None = None,
                 batch_size: int = 64) -> None:
        if batch_size < 1:
            raise PerceptionError("batch_size must be positive")
        self.model = clip_model
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.device = resolve_device(device)
        self.amp = self.device.startswith("cuda") if amp is None else bool(amp)
        self.batch_size = batch_size
        self.source = type(clip_model).__name__

    @classmethod
    def from_open_clip(cls, model_name: str = "ViT-B-32", pretrained: str | None = "openai", *,
                       device: str | None = None, **kwargs: Any) -> ClipCosine:
        device = resolve_device(device)
        with loading("compbench-real", "clip_pretrained", f"open_clip {model_name} ({pretrained})"):
            clip = load_clip_weights(model_name, pretrained, device)
        scorer = cls(clip.model, clip.tokenizer, clip.preprocess, device=device, **kwargs)
        scorer.source = f"open_clip {model_name} ({pretrained})"
        return scorer

    def describe(self) -> dict[str, Any]:
        return {"clip": self.source, "amp_fp16": self.amp, "score": "raw cosine"}

    def cosine(self, images: Sequence[np.ndarray], texts: Sequence[str]) -> list[float]:
        """cos(image_i, text_i) for each pair."""
        import torch
        import torch.nn.functional as F
        from PIL import Image

        if len(images) != len(texts):
            raise PerceptionError(f"{len(images)} images but {len(texts)} texts")
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        out: list[float] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            pixels = torch.stack([self.preprocess(Image.fromarray(check_image(im, f"image {start + i}")))
                                  for i, im in enumerate(chunk)]).to(self.device)
            tokens = self.tokenizer(list(texts[start : start + self.batch_size]))
            if hasattr(tokens, "to"):
                tokens = tokens.to(self.device)
            with torch.inference_mode(), torch.autocast(device_type=device_type, dtype=torch.float16,
                                                        enabled=self.amp):
                image_feats = self.model.encode_image(pixels)
                text_feats = self.model.encode_text(tokens)
            check_finite(image_feats, f"CLIP image embedding (batch starting at item {start})")
            check_finite(text_feats, f"CLIP text embedding (batch starting at item {start})")
            cos = (F.normalize(image_feats.float(), dim=-1) * F.normalize(text_feats.float(), dim=-1)).sum(-1)
            check_finite(cos, "CLIP cosine")
            out.extend(float(c) for c in cos.cpu().tolist())
        return out
