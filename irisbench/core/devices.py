"""Which device a command runs on: one resolver for ``--device`` on eval, train, pretrain and experiment.

``resolve_device(spec)`` turns ``None``/``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a concrete
device string and refuses what cannot work with one line naming the flag and the fix (``DeviceError``,
a ``ValueError``: the CLI prints it and exits 2 before any run folder is written):

- ``cuda`` / ``cuda:N`` when no CUDA GPU is visible, ``cuda:N`` with ``N`` beyond the visible GPUs;
- under a launcher (``torchrun``, ``accelerate launch``: ``WORLD_SIZE > 1``) each process takes the GPU
  its ``LOCAL_RANK`` names, so ``cuda`` means ``cuda:LOCAL_RANK``; a ``LOCAL_RANK`` beyond the GPU count
  stops (more processes than GPUs on a node), and an explicit index is refused (it would put every
  process on one GPU);
- anything else (``gpu``, ``mps``, ``cuda:x``).

The default (``None`` or ``"auto"``) is the ``IRISBENCH_DEVICE`` environment variable when set (the test
suite sets ``cpu`` so that CPU-referenced tests stay on the CPU on a GPU host; the ``gpu`` tests pass
``cuda`` explicitly), else ``cuda`` when available, else ``cpu``.

bf16 on the CPU (``check_dtype``): a model held in bf16 runs every matmul in bf16. CPUs with native bf16
dot products (x86 ``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``; Arm ``bf16`` in ``Features``) run
that at speed; others emulate it through fp32 conversions at a fraction of fp32's speed (measured on this
project's AVX2 machine: a bf16 Janus step is several times slower than fp32), so a bf16 model on such a
CPU is refused, and ``fp32`` is the CPU default. ``pretrain``'s ``precision: auto`` follows the same
evidence (``cpu_bf16_native``): bf16 autocast only where the CPU has it natively (on an AVX2-only EPYC one
pretraining step took 16.6 s in bf16 against 1.7 s in fp32).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from irisbench.core.errors import IrisbenchError

ENV_DEFAULT = "IRISBENCH_DEVICE"
_SPEC = re.compile(r"^(cpu|cuda)(?::(\d+))?$")
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


class DeviceError(IrisbenchError, ValueError):
    """A device or dtype request this host cannot honour (the message says which flag and what to do)."""


def _launcher() -> tuple[int, int]:
    """(world size, local rank) as torchrun / accelerate launch set them; (1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    local = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")) or 0)
    return world, local


def default_device() -> str:
    """``$IRISBENCH_DEVICE`` when set, else ``cuda`` when a GPU is visible, else ``cpu``."""
    env = os.environ.get(ENV_DEFAULT, "").strip()
    if env and env != "auto":
        return env
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(spec: str | None = None, *, flag: str = "--device") -> str:
    """A concrete device string (``cpu``, ``cuda:N``) for ``spec``, or ``DeviceError``; see the module doc."""
    raw = default_device() if spec is None or str(spec).strip() in ("", "auto") else str(spec).strip()
    m = _SPEC.match(raw.lower())
    if m is None:
        raise DeviceError(f"{flag} {raw!r}: expected cpu, cuda, cuda:N or auto")
    kind, index = m.group(1), m.group(2)
    if kind == "cpu":
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise DeviceError(f"{flag} {raw}: no CUDA GPU is visible here (torch.cuda.is_available() is False; "
                          f"torch {torch.__version__}); use {flag} cpu")
    count = torch.cuda.device_count()
    world, local = _launcher()
    if world > 1:
        if index is not None:
            raise DeviceError(f"{flag} {raw}: under torchrun / accelerate launch each process takes the GPU its "
                              f"LOCAL_RANK names; pass {flag} cuda (no index)")
        if local >= count:
            raise DeviceError(f"LOCAL_RANK={local} but only {count} GPU(s) are visible on this node: launch at most "
                              f"{count} process(es) per node (torchrun --nproc_per_node={count}), or pass {flag} cpu "
                              f"(gloo)")
        return f"cuda:{local}"
    i = int(index) if index is not None else torch.cuda.current_device()
    if i >= count:
        raise DeviceError(f"{flag} {raw}: only {count} GPU(s) are visible (cuda:0..cuda:{count - 1}); "
                          f"check CUDA_VISIBLE_DEVICES")
    return f"cuda:{i}"


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has bf16 dot-product instructions (see the module doc for the rule)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        try:
            cpuinfo = path.read_text(errors="replace") if path.is_file() else ""
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        words = set(value.split())
        if key == "flags" and words.intersection(_CPU_BF16_FLAGS):
            return True
        if key == "features" and "bf16" in words:  # aarch64
            return True
    return False


def cpu_bf16_native() -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16), and the evidence, in words.

    torch's own cpuinfo answers first (``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported``);
    where those private helpers are missing, ``cpu_has_native_bf16`` (the flags of /proc/cpuinfo).
    Anything else (AVX2-only x86, Arm, other systems) counts as not native: there torch emulates bf16
    matmuls through fp32 conversions, measured ~500x slower than fp32 on an AVX2 EPYC.
    """
    import torch

    capability = str(torch.backends.cpu.get_cpu_capability())
    probe = getattr(torch, "cpu", None)
    avx512_bf16 = getattr(probe, "_is_avx512_bf16_supported", None)
    amx = getattr(probe, "_is_amx_tile_supported", None)
    if callable(avx512_bf16) and callable(amx):
        found = [name for name, ok in (("avx512_bf16", avx512_bf16()), ("amx", amx())) if ok]
        source = "torch cpuinfo"
    else:
        found = ["bf16 instructions"] if cpu_has_native_bf16() else []
        source = "/proc/cpuinfo flags"
    held = isa_held_below_avx512()
    if found and held:
        return False, (f"CPU has {' and '.join(found)} but {held} holds the math libraries below AVX-512 "
                       f"({source}; capability {capability})")
    if found:
        return True, f"CPU has {' and '.join(found)} ({source}; capability {capability})"
    return False, f"CPU lacks avx512_bf16 and amx ({source}; capability {capability})"


def isa_held_below_avx512() -> str:
    """The first of ``ONEDNN_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS``, ``ATEN_CPU_CAPABILITY`` set to an
    instruction set below AVX-512 (as ``NAME=VALUE``; "" when none is): then bf16 is emulated whatever
    the CPU has."""
    from irisbench.core.provenance import isa_overrides

    for name, value in isa_overrides().items():
        if value.strip() and not any(k in value.upper() for k in ("AVX512", "AVX10", "AMX", "ALL", "DEFAULT")):
            return f"{name}={value}"
    return ""


def dtype_name(dtype: object) -> str:
    """``bfloat16``/``float16``/``float32`` for a torch dtype or one of the accepted strings."""
    text = str(dtype).replace("torch.", "").strip().lower()
    return {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}.get(
        text, text)


def check_dtype(dtype: object, device: str, *, flag: str = "dtype", cpuinfo: str | None = None) -> None:
    """Refuse a bf16 (or fp16) model on a CPU that has no native instructions for it."""
    if dtype is None or not str(device).startswith("cpu"):
        return
    name = dtype_name(dtype)
    if name == "bfloat16" and not cpu_has_native_bf16(cpuinfo):
        raise DeviceError(f"{flag} bfloat16 on the CPU: this CPU has no native bf16 instructions (no avx512_bf16 "
                          f"or amx_bf16 in /proc/cpuinfo), every matmul would be emulated; use {flag} float32 "
                          f"on the CPU, or a GPU")
    if name == "float16":
        raise DeviceError(f"{flag} float16 on the CPU: use float32 on the CPU (float16 is for GPUs)")


def device_record(device: str) -> dict[str, object]:
    """What a run records about its device (provenance): the string, and the GPU's name and memory."""
    rec: dict[str, object] = {"device": device}
    if device.startswith("cuda"):
        import torch

        props = torch.cuda.get_device_properties(torch.device(device))
        rec.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1e9, 1),
                   capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda)
    return rec
