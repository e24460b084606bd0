"""A weightless dry run of a Janus-Pro training preset at full size: device-correct, with memory and FLOPs.

``irisbench dryrun -c janus-pro-1b-iris --device cuda`` builds the released model's *shape* (a
``JanusConfig`` sized like Janus-Pro-1B or -7B, ``JANUS_SIZES``; or the ``config.json`` of the preset's
model folder when that folder exists) without any weights, and runs the project's real code on it: one
evaluation batch (``JanusPolicy.sample``: CoT, CFG image tokens, VQ decode) and one GRPO step of
``irisbench.train.trainer.GRPOTrainer`` (``_setup`` with its freezing, KL reference copy and AdamW; ``step``:
rollout, teacher-forced pass, rewards, group advantages, loss, backward, gradient clipping, optimizer
step). Nothing is allocated, so it runs on a CPU in seconds to minutes.

What runs under what, and why (measured on the pinned torch; a GPU-less host):

- **Sampling (the evaluation batch and the GRPO rollout) runs on fake ``cuda`` tensors**
  (``torch._subclasses.fake_tensor.FakeTensorMode``): the model is built under ``torch.device("cuda")``, so
  the policy sees ``cuda:0`` everywhere (bf16 by default, ``device.type == "cuda"`` branches taken), and a
  tensor the code makes on the CPU that meets a model tensor raises ``FakeTensorDeviceMismatchError``, as
  CUDA would.
- **The GRPO update (teacher forcing, rewards, advantages, loss, backward, optimizer step) runs on the
  ``meta`` device**: backward through fake ``cuda`` tensors fails without a GPU (the autograd engine asks
  for a CUDA context, ``hasPrimaryContext``), while meta tensors run forward and backward and a CPU tensor
  meeting a meta tensor raises ("Tensor on device cpu is not on the expected device meta!"). The trainer
  takes a second copy of the same model built on meta; the rollout comes from the fake-``cuda`` copy.

Stubbed (the data-dependent boundaries only; ``HostReads``): every read of a fake or meta tensor's
*values* on the host (``.cpu()``, ``.numpy()``, ``.tolist()``, ``.item()``, ``bool()``, ``float()``,
``int()``) returns ones of the right shape and dtype (the shape and dtype are checked, only the values
are stubbed). So sampled tokens are 1 (neither EOS nor a special id) and every row's CoT runs to
``cot_max_new_tokens`` (the worst case for memory and time); every finiteness check passes; the gradient
norm reads 1; rewards are computed by the real reward code from those ones (equal within a group, so the
advantages are 0: values do not matter here, devices and shapes do). ``JanusPolicy._generators`` returns
no generators (a ``torch.Generator`` on ``cuda`` needs a GPU; fake draws have no values anyway). Without
weights the tokenizer is ``ConfigTokenizer`` (special ids from the config; one token per 4 UTF-8 bytes of
text, about the BPE rate of English) unless the model folder has its own.

Measured from the same run: FLOPs (``torch.utils.flop_counter.FlopCounterMode``: matmuls, convolutions and
attention; elementwise work is not counted) split into sampling, teacher forcing (policy and reference)
and backward; what the update holds (parameters of the policy and its reference, gradients, AdamW state:
read from the objects after the step); with ``measure=True`` the activation and temporary peaks from
``torch.distributed._tools.mem_tracker.MemTracker`` over the update (``irisbench.dryrun.fake_world.mem_tracker``:
module statistics skipped where its stock hooks refuse, so only the global peak by category is read); with
``world=N``, rank 0 of a fake world of N ranks under FSDP2 and its ``FSDPMemTracker``
(``irisbench.dryrun.fake_world``). Always measured: the
activations the teacher-forced pass saves for backward (``torch.autograd.graph.saved_tensors_hooks``;
distinct storages, parameters excluded), the largest micro-batch's. ``irisbench.dryrun.cost`` turns
them into per-GPU memory under FSDP2 and roofline times.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from irisbench.core.distributed import Dist
from irisbench.core.errors import IrisbenchError
from irisbench.dryrun.cost import flops_full
from irisbench.dryrun.fake_world import fake_world, fsdp_tracker, local_bytes, mem_tracker, tracker_peak
from irisbench.dryrun.sizes import JANUS_SIZES, JanusSize
from irisbench.train.config import TrainConfig


class DryRunError(IrisbenchError, RuntimeError):
    """The dry run found a bug (a device mismatch, a shape error) in the training code path."""


def size_for(model: str | None) -> JanusSize:
    """The release a preset's ``model`` names (``deepseek-ai/Janus-Pro-7B`` -> ``janus-pro-7b``)."""
    name = Path(str(model or "")).name.lower()
    for key, size in JANUS_SIZES.items():
        if key in name:
            return size
    raise DryRunError(f"model {model!r}: the dry run knows the shapes of {', '.join(JANUS_SIZES)}; set "
                      "model= to one of them (the folder need not exist)")


def janus_config(size: JanusSize) -> Any:
    """A ``JanusConfig`` with the release's shapes and special ids (untied ``lm_head``, as released)."""
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    text = LlamaConfig(vocab_size=size.vocab, hidden_size=size.hidden, intermediate_size=size.mlp,
                       num_hidden_layers=size.layers, num_attention_heads=size.heads,
                       num_key_value_heads=size.kv, max_position_embeddings=16384, bos_token_id=size.bos_id,
                       eos_token_id=size.eos_id, pad_token_id=size.pad_id, tie_word_embeddings=False)
    vision = JanusVisionConfig(projection_dim=size.hidden)
    vq = JanusVQVAEConfig(projection_dim=size.hidden, image_token_embed_dim=size.hidden)
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=size.image_token_id,
                       tie_word_embeddings=False)


class ConfigTokenizer:
    """A stand-in tokenizer for a model without a folder: special ids from the config, one id per 4 bytes."""

    boi_token = "<begin_of_image>"

    def __init__(self, size: JanusSize) -> None:
        self.bos_token_id, self.eos_token_id, self.pad_token_id = size.bos_id, size.eos_id, size.pad_id
        self.unk_token_id, self._boi = None, size.boi_id

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        data = text.encode("utf-8")
        return {"input_ids": [1000 + data[i] for i in range(0, len(data), 4)]}

    def convert_tokens_to_ids(self, token: str) -> int | None:
        return self._boi if token == self.boi_token else None

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return " ".join("w" for _ in ids)


def _is_stub_target(t: Any) -> bool:
    import torch
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, torch.Tensor) and (isinstance(t, FakeTensor) or t.is_meta)


class HostReads:
    """A ``TorchFunctionMode`` that stubs host reads of fake / meta values with ones (see the module doc)."""

    READS = ("cpu", "numpy", "tolist", "item", "__bool__", "__float__", "__int__", "__index__")

    def __new__(cls) -> Any:
        import torch
        from torch._subclasses.fake_tensor import unset_fake_temporarily
        from torch.overrides import TorchFunctionMode
        from torch.utils._pytree import tree_leaves

        counts: Counter[str] = Counter()

        class _Mode(TorchFunctionMode):
            def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
                name = getattr(func, "__name__", "")
                if name in HostReads.READS and args and _is_stub_target(args[0]):
                    t = args[0]
                    counts[name] += 1
                    with unset_fake_temporarily():
                        ones = torch.ones(t.shape, dtype=t.dtype)
                        return ones if name == "cpu" else getattr(ones, name)()
                kwargs = kwargs or {}
                leaves = tree_leaves((args, kwargs))
                tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
                to_device = any(isinstance(x, (torch.device, str)) and str(x).startswith(("cuda", "meta"))
                                for x in leaves)  # a host-to-device copy makes a fake / meta tensor
                if tensors and not to_device and not any(_is_stub_target(x) for x in tensors):
                    with unset_fake_temporarily():  # host-side work on real (stubbed) values stays real
                        return func(*args, **kwargs)
                return func(*args, **kwargs)

        mode = _Mode()
        mode.counts = counts
        return mode


@contextlib.contextmanager
def _default_dtype(dtype: Any) -> Iterator[None]:
    import torch

    was = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(was)


def build_model(config: Any, device: str, dtype: Any, fake_mode: Any = None) -> Any:
    """``JanusForConditionalGeneration(config)`` on ``device`` without weights (under ``fake_mode`` if given).

    The dtype is set as the default during construction (``.to(bf16)`` cannot swap fake parameters)."""
    import torch
    from transformers import JanusForConditionalGeneration

    with fake_mode or contextlib.nullcontext(), torch.device(device), _default_dtype(dtype):
        return JanusForConditionalGeneration(config).eval()


class _Flops:
    """One ``FlopCounterMode`` over the whole run; ``phase(name)`` books the FLOPs counted inside it."""

    def __init__(self) -> None:
        from torch.utils.flop_counter import FlopCounterMode

        self.mode = FlopCounterMode(display=False)
        self.by_phase: Counter[str] = Counter()
        self._depth = 0

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self._depth:  # nested phases (a reference pass inside teacher forcing) book to the outer one
            yield
            return
        self._depth += 1
        before = self.mode.get_total_flops()
        try:
            yield
        finally:
            self._depth -= 1
            self.by_phase[name] += self.mode.get_total_flops() - before


_WHERE_PACKAGES = ("core", "train", "evaluation", "experiment", "cli", "policies")  # the dry run's own code is not


def _where(err: BaseException) -> str:
    """``package/file:line`` of the innermost irisbench frame of a traceback (in ``_WHERE_PACKAGES``)."""
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if Path(f.filename).parent.name in _WHERE_PACKAGES and Path(f.filename).parent.parent.name == "irisbench"]
    if not frames:
        return "?"
    f = frames[-1]
    return f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno}"


def _is_device_mismatch(err: BaseException) -> bool:
    text = str(err)
    return ("device" in text and ("expected device" in text or "two devices" in text or "same device" in text))


@contextlib.contextmanager
def _explain(phase: str) -> Iterator[None]:
    """Turn a device mismatch (or any other failure) inside ``phase`` into one ``DryRunError`` line."""
    try:
        yield
    except IrisbenchError:
        raise
    except Exception as err:  # the point of a dry run: every failure is reported as a finding
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        kind = "device mismatch" if _is_device_mismatch(err) else type(err).__name__
        raise DryRunError(f"dry run, {phase}: {kind} at {_where(err)}: {first}") from err


def _prompts(n: int) -> list[str]:
    base = ["a photo of a red cube to the left of a blue sphere", "three yellow birds above a green tree",
            "a black cat sitting on a white chair next to a wooden table", "two purple umbrellas in the rain"]
    return [base[i % len(base)] for i in range(n)]


def dry_run(cfg: TrainConfig, *, device: str = "cuda", measure: bool = False, decode_steps: int | None = 2,
            rows: int | None = None, size: JanusSize | None = None, world: int = 0,
            eval_batch: bool = True) -> dict[str, Any]:
    """One evaluation batch and one GRPO step of ``cfg`` on a weightless full-size Janus; a JSON-able report.

    ``device``: ``cuda`` (the sampling on fake CUDA tensors, the update on meta; see the module doc) or ``cpu``
    (both on fake CPU tensors: memory only, no device check). ``decode_steps``: decode steps run per sampling
    loop (``_short_loops``; None: all); ``rows``: the evaluation batch's rows (default the policy's
    ``batch_size``); ``size``: a shape instead of the one the preset's model names (tests). ``world``: 0 (one
    process, no sharding) or N: the step as rank 0 of a fake world of N ranks under FSDP2 (``parallel: fsdp``,
    ``irisbench.dryrun.fake_world``; ``device`` cuda only), its memory by category from ``FSDPMemTracker``
    (always measured). ``eval_batch``: False skips the evaluation batch. Raises ``DryRunError`` with one line on
    the first failure of the code path.
    """
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from irisbench.policies.janus import JanusPolicy, _dtype
    from irisbench.policies.janus_checkpoint import check_expected_config, resolve_checkpoint
    from irisbench.train.trainer import GRPOTrainer

    if device not in ("cuda", "cpu"):
        raise DryRunError(f"--device {device!r}: a dry run simulates cuda (fake CUDA tensors) or cpu")
    if world and device != "cuda":
        raise DryRunError(f"--device {device}: a fake world (--world) shards the update on meta; use --device cuda")
    if world:
        per_rank = cfg.prompts_per_step // world if cfg.prompts_per_step % world == 0 else 0
        if not per_rank or per_rank % cfg.gradient_accumulation_steps:
            raise DryRunError(f"prompts_per_step={cfg.prompts_per_step} over {world} ranks with "
                              f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} would split a group "
                              "(the trainer refuses it); set gradient_accumulation_steps or prompts_per_step")
        cfg, measure = replace(cfg, parallel="fsdp"), True
    sharded_preset = not world and cfg.parallel == "fsdp"
    if sharded_preset:  # one process holds the whole model; sharding needs a group: the fake world's (--world N)
        cfg = replace(cfg, parallel="ddp")
    if cfg.policy != "janus-pro":
        raise DryRunError(f"policy {cfg.policy!r}: the dry run builds Janus-Pro models (policy: janus-pro)")
    size = size or size_for(cfg.model)
    config, tokenizer, folder = janus_config(size), ConfigTokenizer(size), None
    options = dict(cfg.policy_options)
    expect = options.pop("expect", None) or {}
    try:
        folder = resolve_checkpoint(cfg.model)
    except IrisbenchError:
        folder = None  # no weights needed: the shape comes from the release's config
    if folder is not None:
        from transformers import JanusConfig, JanusProcessor

        check_expected_config(folder, {"hidden_size": size.hidden, "num_hidden_layers": size.layers, **expect})
        config = JanusConfig.from_pretrained(folder)
        tokenizer = JanusProcessor.from_pretrained(folder).tokenizer
    dtype = _dtype(options.pop("dtype", None), device)
    options = {k: v for k, v in options.items() if k in ("cot", "cot_max_new_tokens", "cot_temperature",
                                                         "cot_top_k", "batch_size", "logits_chunk",
                                                         "gradient_checkpointing", "decode", "stats_source")}
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    host = HostReads()
    flops = _Flops()
    report: dict[str, Any] = {"model": cfg.model, "size": size.name, "config_source": str(folder or "built-in"),
                              "device": device, "dtype": str(dtype).replace("torch.", ""),
                              "world": world, "parallel": cfg.parallel,
                              **({"note": "the preset shards with FSDP2 (parallel: fsdp); this single-process run "
                                          "holds the whole model, and --world N runs the sharded step"}
                                 if sharded_preset else {})}
    t0 = time.perf_counter()
    with _explain("building the model"):
        sampler_model = build_model(config, device, dtype, fake)
        train_model = build_model(config, "meta" if device == "cuda" else device, dtype,
                                  None if device == "cuda" else FakeTensorMode(allow_non_fake_inputs=True))
    report["parameters"] = sum(p.numel() for p in train_model.parameters())
    sampler = JanusPolicy(sampler_model, tokenizer, checkpoint=str(cfg.model), **options)
    sampler._generators = lambda seeds: [None] * len(seeds)
    policy = JanusPolicy(train_model, tokenizer, checkpoint=str(cfg.model), **options)
    sample_calls: list[dict[str, Any]] = []
    last_rollout: list[Any] = [None]
    tracking: list[Any] = [None]  # the update's memory tracker, once it runs
    sampling_held: dict[str, int] = {}

    def sample(*args: Any, **kwargs: Any) -> Any:  # the trainer's rollouts come from the fake-cuda copy
        t = time.perf_counter()
        if tracking[0] is not None and world:  # inside the trainer's gathered(): the whole policy on each rank
            tracking[0].note_gathered()
            for key, nbytes in tracker_peak(tracking[0], "current").items():
                sampling_held[key] = max(sampling_held.get(key, 0), nbytes)
        with fake, flops.phase("sampling"), _short_loops(decode_steps, report):
            out = sampler.sample(*args, **kwargs)
        sample_calls.append({"rows": len(out), "s": round(time.perf_counter() - t, 2)})
        last_rollout[0] = out
        return out

    policy.sample = sample  # a plain function (the trainer deep-copies the policy for its KL reference)
    real_token_logits = JanusPolicy.token_logits

    def token_logits(self: JanusPolicy, *args: Any, **kwargs: Any) -> Any:
        with flops.phase("teacher_forcing"):
            return real_token_logits(self, *args, **kwargs)

    real_backward = torch.Tensor.backward

    saved: dict[int, int] = {}  # storage -> bytes saved for backward by the current micro-batch
    saved_peak = [0]

    def pack(t: Any) -> Any:
        key = t.untyped_storage()._cdata
        if key not in param_storages:
            saved[key] = t.untyped_storage().nbytes()
        return t

    def backward(self: Any, *args: Any, **kwargs: Any) -> Any:
        saved_peak[0] = max(saved_peak[0], sum(saved.values()))
        saved.clear()
        with flops.phase("backward"):
            return real_backward(self, *args, **kwargs)

    cfg = replace(cfg, eval_every=0, steps=max(cfg.steps, 1), num_threads=1)
    with tempfile.TemporaryDirectory(prefix="irisbench-dryrun-") as tmp, flops.mode, host:
        prompts = Path(tmp) / "prompts.txt"
        prompts.write_text("\n".join(_prompts(8)) + "\n", encoding="utf-8")
        cfg = replace(cfg, prompts_file=str(prompts))
        if eval_batch:
            with _explain("evaluation batch (fake cuda)"):
                t1 = time.perf_counter()
                eval_rollout = sample(_prompts(rows or sampler.batch_size), n=1, seed=0)
                report["eval_batch"] = {"rows": len(eval_rollout), "tokens_per_row": int(eval_rollout.tokens.shape[1]),
                                        "image_shape": list(eval_rollout.images[0].shape),
                                        "s": round(time.perf_counter() - t1, 2)}
        sample_calls.clear()
        trainer = GRPOTrainer(cfg, Path(tmp) / "run", progress=False, policy=policy, device="cpu")
        trainer.device = trainer.dist.device = str(policy.device)  # the policy's device, as on a GPU
        update_mem = None
        with contextlib.ExitStack() as stack:
            if world:  # rank 0 of N: the trainer takes its share of the prompts and shards over the fake group
                stack.enter_context(fake_world(world))
                trainer.dist = Dist(rank=0, world_size=world, device=trainer.device)
            with _explain("trainer set-up" + (f" (FSDP2, fake world of {world})" if world else "")):
                trainer._setup()
            if world:
                update_mem = fsdp_tracker(trainer.policy.model, trainer.optimizer,
                                          trainer.ref.model if trainer.ref is not None else None)
            elif measure:
                update_mem = mem_tracker()
                update_mem.track_external(*[m for m in (trainer.policy.model, getattr(trainer.ref, "model", None))
                                            if m is not None], trainer.optimizer)
            if update_mem is not None:
                stack.enter_context(update_mem)
                tracking[0] = update_mem
            stack.enter_context(_patched(JanusPolicy, "token_logits", token_logits))
            stack.enter_context(_patched(torch.Tensor, "backward", backward))
            if device == "cuda":
                stack.enter_context(_fused_attention())
            models = [trainer.policy.model] + ([trainer.ref.model] if trainer.ref is not None else [])
            param_storages = {p.untyped_storage()._cdata for m in models for p in m.parameters()}
            stack.enter_context(torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t))
            for step in range(2 if world else 1):  # under FSDP2, step 2 holds AdamW state and the last gradients
                sample_calls.clear()
                with _explain(f"GRPO step {step + 1} (rollout on fake cuda, update on meta"
                              + (f", FSDP2 rank 0 of {world})" if world else ")") if device == "cuda"
                              else "GRPO step 1"):
                    t2 = time.perf_counter()
                    metrics = trainer.step(step)
                if step == 0:
                    first_flops = Counter(flops.by_phase)
            flops.by_phase = first_flops  # one step's FLOPs
            report["grpo_step"] = {"s": round(time.perf_counter() - t2, 2), "sampling_calls": list(sample_calls),
                                   "rollouts": sum(c["rows"] for c in sample_calls),
                                   "micro_batch_rows": sum(c["rows"] for c in sample_calls)
                                   // cfg.gradient_accumulation_steps,
                                   "metrics": sorted(metrics), "steps_run": step + 1}
            report["memory_bytes"] = {"update": {**_held(trainer, update_mem), "saved_for_backward": saved_peak[0]}}
            if world:
                report["memory_bytes"]["fsdp_peak"] = tracker_peak(update_mem)
                report["memory_bytes"]["fsdp_sampling"] = dict(sampling_held)
            del trainer, update_mem
            tracking[0] = None
    report["flops"] = {k: int(v) for k, v in flops.by_phase.items()}
    report["flops_full"] = flops_full(report)
    text = config.text_config
    rollouts = report["grpo_step"]["rollouts"]
    report["shape"] = {
        "layers": text.num_hidden_layers, "batch_size": min(sampler.batch_size, rollouts),
        "kv_width": text.hidden_size * text.num_key_value_heads // text.num_attention_heads,
        "prompt_len": max(len(p) for p in last_rollout[0].extras["image_prompt_ids"]),
        "cot_steps": sampler.cot_max_new_tokens if sampler.cot else 0, "image_steps": sampler.num_image_tokens,
        "sampling_batches": math.ceil(rollouts / sampler.batch_size)}
    report["shape"]["image_len"] = report["shape"]["prompt_len"] + report["shape"]["cot_steps"] + \
        report["shape"]["image_steps"]
    report["parameters_by_part"] = _parts(train_model)
    report["host_reads_stubbed"] = dict(host.counts)
    report["wall_s"] = round(time.perf_counter() - t0, 2)
    return report


def _held(trainer: Any, tracker: Any) -> dict[str, int]:
    """Bytes the update holds, read from the objects after the step: parameters (policy and KL reference),
    gradients, AdamW state; plus the activation and temporary peak when a ``MemTracker`` ran."""
    import torch

    models = [trainer.policy.model] + ([trainer.ref.model] if trainer.ref is not None else [])
    params = {id(p): p for m in models for p in m.parameters()}.values()
    out = {"param": sum(local_bytes(p) for p in params),
           "grad": sum(local_bytes(p.grad) for p in params if p.grad is not None),
           "opt": sum(local_bytes(t) for st in trainer.optimizer.state.values() for t in st.values()
                      if isinstance(t, torch.Tensor) and t.dim() > 0)}
    if tracker is not None:
        peak = tracker_peak(tracker)
        out["act"] = peak.get("activation", 0)
        out["temp"] = peak.get("temp", 0)
    return out


def _parts(model: Any) -> dict[str, int]:
    """Parameter counts: the decoder (blocks and final norm), token embeddings, ``lm_head``, the image-generation
    parts (embeddings, aligner, head) and the whole model."""
    def count(module: Any) -> int:
        return sum(p.numel() for p in module.parameters())

    lm, inner = model.model.language_model, model.model
    gen = count(inner.generation_embeddings) + count(inner.generation_aligner) + count(inner.generation_head)
    return {"language_model": count(lm) - count(lm.embed_tokens), "embed_tokens": count(lm.embed_tokens),
            "lm_head": count(model.lm_head), "generation": gen, "total": count(model)}


@contextlib.contextmanager
def _short_loops(steps: int | None, report: dict[str, Any]) -> Iterator[None]:
    """Run the sampling loops (``janus_decode.sample_text`` / ``sample_image_tokens``) for at most ``steps``
    decode steps each (None: all), then pad their host-side output with stub tokens to the full length.

    A decode step under fake tensors costs seconds on a CPU (1B: about 2 s for 32 rows), so a full rollout
    (up to 512 CoT + 576 image steps) takes most of an hour; every step after the first runs the same code on
    the same shapes (one position longer), so the short loop checks the same devices. FLOPs are scaled to the
    full length by the tokens each loop processes (``flop_scale``)."""
    import torch
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    import irisbench.policies.janus as janus_module

    if steps is None:
        yield
        return
    loops = {"sample_text": "max_new_tokens", "sample_image_tokens": "num_tokens"}
    real = {name: getattr(janus_module, name) for name in loops}
    scale = report.setdefault("flop_scale", {"processed": 0, "full": 0})

    def short(name: str) -> Any:
        def run(model: Any, prompt_ids: Any, *args: Any, **kwargs: Any) -> Any:
            full = kwargs[loops[name]]
            kwargs[loops[name]] = min(full, steps)
            out = real[name](model, prompt_ids, *args, **kwargs)
            prompt = max(len(p) for p in prompt_ids)
            scale["processed"] += prompt + kwargs[loops[name]] - 1
            scale["full"] += prompt + full - 1
            if full > kwargs[loops[name]]:
                with unset_fake_temporarily():
                    for f in ("tokens", "mask", "logp", "self_certainty", "entropy"):
                        t = getattr(out, f)
                        pad = torch.ones((t.shape[0], full - t.shape[1]), dtype=t.dtype)
                        setattr(out, f, torch.cat([t, pad], dim=1))
            return out

        return run

    try:
        for name in loops:
            setattr(janus_module, name, short(name))
        yield
    finally:
        for name, fn in real.items():
            setattr(janus_module, name, fn)


@contextlib.contextmanager
def _fused_attention() -> Iterator[None]:
    """Attention on meta as a GPU computes it: SDPA on ``meta`` takes its math path, which saves the
    query x key attention weights in fp32 for backward, while CUDA takes a fused kernel that saves only
    its inputs, output and log-sum-exp (memory-efficient attention, the one that takes a mask, for bf16).
    Here a meta call goes to that kernel's op (``aten._scaled_dot_product_efficient_attention``, which has
    meta kernels), a boolean mask turned into an additive bias as SDPA does; other calls are unchanged."""
    import torch
    import torch.nn.functional as F

    real = F.scaled_dot_product_attention

    def sdpa(q: Any, k: Any, v: Any, attn_mask: Any = None, dropout_p: float = 0.0, is_causal: bool = False,
             scale: float | None = None, enable_gqa: bool = False) -> Any:
        if not q.is_meta or enable_gqa:
            return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                        enable_gqa=enable_gqa)
        bias = attn_mask
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            bias = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill(~attn_mask, -math.inf)
        return torch.ops.aten._scaled_dot_product_efficient_attention(
            q, k, v, bias, q.requires_grad and torch.is_grad_enabled(), dropout_p, is_causal, scale=scale)[0]

    with _patched(F, "scaled_dot_product_attention", sdpa):
        yield


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def main_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str)


__all__ = ["JANUS_SIZES", "ConfigTokenizer", "DryRunError", "HostReads", "JanusSize", "build_model", "dry_run",
           "janus_config", "size_for"]
