"""Provenance of a process: Python, platform, package versions, git commit, CPU model and instruction set.

Recorded in every run folder's ``env.json`` (``irisbench.core.runs.RunDir``) and beside every wall time, because
timings and even floating-point results differ between CPUs (an AVX2-only CPU rounds sgemm differently and
runs bf16 hundreds of times slower). No torch import here: versions come from the installed metadata, and
device details are added only when the caller has already imported torch.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

_ENV_PACKAGES = ("irisbench", "torch", "torchvision", "transformers", "tokenizers", "safetensors",
                 "accelerate", "numpy", "scipy", "pandas", "pyarrow", "pillow", "pyyaml", "open_clip_torch",
                 "torchmetrics", "typer")


def _git_info(repo: Path) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != repo.resolve():  # an installed copy inside some other repo
        return {"commit": None, "dirty": None}
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


# environment variables that change which instructions the math libraries use (timings depend on them)
ISA_VARS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")


PACKAGE = Path(__file__).resolve().parents[1]


def code_fingerprint(package: Path = PACKAGE) -> str:
    """sha256 over the package's Python sources (each file's path and bytes, in path order): a long job that
    imports modules as it goes (each stage, each worker process) compares it with its start-time value, so
    code changed under it is refused in one line instead of old and new modules meeting (~10 ms here)."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def isa_overrides() -> dict[str, str]:
    """Those of ``ISA_VARS`` set in this process's environment, with their values."""
    return {k: os.environ[k] for k in ISA_VARS if k in os.environ}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else the platform's processor string, else "unknown")."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def env_info() -> dict[str, Any]:
    """Provenance of this process: Python, platform, package versions, git commit, CPU model, host, time.

    Package versions come from installed metadata (torch is never imported here). Device details are added
    only if torch is already imported by the caller.
    """
    from importlib import metadata

    packages: dict[str, str | None] = {}
    for name in _ENV_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        affinity = None
    info: dict[str, Any] = {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "argv": list(sys.argv),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "irisbench_version": packages.get("irisbench"),
        "git": _git_info(Path(__file__).resolve().parents[2]),
        "packages": packages,
        "env_vars": {**{k: os.environ[k] for k in ("CUDA_VISIBLE_DEVICES", "HF_HUB_OFFLINE", "OMP_NUM_THREADS")
                        if k in os.environ}, **isa_overrides()},
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        dev: dict[str, Any] = {"torch": getattr(torch, "__version__", None)}
        try:
            dev["cpu_capability"] = str(torch.backends.cpu.get_cpu_capability())  # the kernels ATen runs
            dev["cuda_available"] = bool(torch.cuda.is_available())
            if dev["cuda_available"]:
                dev["cuda"] = torch.version.cuda
                dev["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        except Exception as e:  # pragma: no cover - broken CUDA setups should not stop a run
            dev["error"] = repr(e)
        info["device"] = dev
    return info
