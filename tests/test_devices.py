"""``--device`` resolution and refusal (irisbench.core.devices, irisbench.core.distributed), with a faked GPU count:
what a CPU-only host, a one-GPU host and a launcher with too many processes each get."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")

from irisbench.cli import app  # noqa: E402
from irisbench.core import devices  # noqa: E402
from irisbench.core.devices import DeviceError, check_dtype, cpu_has_native_bf16, resolve_device  # noqa: E402
from irisbench.core.distributed import Dist  # noqa: E402

runner = CliRunner()


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch):
    """Pretend ``n`` CUDA GPUs are visible (0: none), and clear launcher variables."""
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)

    def set_count(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)

    return set_count


def test_cpu_and_auto(gpus, monkeypatch: pytest.MonkeyPatch) -> None:
    gpus(0)
    assert resolve_device("cpu") == "cpu"
    monkeypatch.delenv("IRISBENCH_DEVICE", raising=False)
    assert resolve_device(None) == "cpu" and resolve_device("auto") == "cpu"
    gpus(1)
    assert resolve_device(None) == "cuda:0"  # the default follows the host
    monkeypatch.setenv("IRISBENCH_DEVICE", "cpu")
    assert resolve_device(None) == "cpu"  # ... unless IRISBENCH_DEVICE says otherwise (the test suite)
    assert resolve_device("cuda") == "cuda:0"  # an explicit request wins over the variable


def test_cuda_requests(gpus) -> None:
    gpus(0)
    with pytest.raises(DeviceError, match=r"--device cuda: no CUDA GPU is visible.*use --device cpu"):
        resolve_device("cuda")
    gpus(1)
    assert resolve_device("cuda:0") == "cuda:0" and resolve_device("CUDA") == "cuda:0"
    with pytest.raises(DeviceError, match=r"--device cuda:7: only 1 GPU\(s\) are visible \(cuda:0..cuda:0\)"):
        resolve_device("cuda:7")
    gpus(8)
    assert resolve_device("cuda:7") == "cuda:7"
    for bad in ("gpu", "mps", "cuda:x", "cuda:-1", "cpu:0:1"):
        with pytest.raises(DeviceError, match="expected cpu, cuda, cuda:N or auto"):
            resolve_device(bad)


def test_launcher_takes_the_local_rank_gpu(gpus, monkeypatch: pytest.MonkeyPatch) -> None:
    gpus(2)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda") == "cuda:1"
    monkeypatch.delenv("IRISBENCH_DEVICE", raising=False)
    assert resolve_device(None) == "cuda:1"
    with pytest.raises(DeviceError, match="pass --device cuda \\(no index\\)"):
        resolve_device("cuda:0")
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(DeviceError, match=r"^LOCAL_RANK=2 but only 2 GPU\(s\) are visible on this node: launch at "
                                          r"most 2 process\(es\) per node \(torchrun --nproc_per_node=2\)"):
        resolve_device("cuda")
    assert resolve_device("cpu") == "cpu"  # more processes than GPUs: fine on the CPU (gloo)


def test_dist_rank_beyond_gpus_stops_before_joining(gpus, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    gpus(1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    joined: list[str] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: joined.append(backend))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    with pytest.raises(DeviceError, match="LOCAL_RANK=1 but only 1 GPU"):
        Dist.from_env("cuda")
    assert joined == []
    # on the CPU the same launch uses gloo and sets no GPU
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: joined.append(f"set {d}"))
    d = Dist.from_env("cpu")
    assert joined == ["gloo"] and (d.rank, d.world_size, d.device) == (1, 2, "cpu")
    joined.clear()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    d = Dist.from_env("cuda")
    assert joined == ["set cuda:0", "cpu:gloo,cuda:nccl"] and d.device == "cuda:0"


def test_native_bf16_rule() -> None:
    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    assert not cpu_has_native_bf16(avx2)
    assert cpu_has_native_bf16("flags\t: fpu avx512f avx512_bf16\n")
    assert cpu_has_native_bf16("flags\t: fpu amx_tile amx_bf16\n")
    assert cpu_has_native_bf16("Features\t: fp asimd bf16 i8mm\n")
    assert not cpu_has_native_bf16("Features\t: fp asimd\n")
    with pytest.raises(DeviceError, match="dtype bfloat16 on the CPU: this CPU has no native bf16"):
        check_dtype(torch.bfloat16, "cpu", cpuinfo=avx2)
    with pytest.raises(DeviceError, match="float16 on the CPU"):
        check_dtype("fp16", "cpu", cpuinfo=avx2)
    check_dtype("bf16", "cpu", cpuinfo="flags\t: avx512_bf16\n")
    check_dtype(torch.bfloat16, "cuda:0", cpuinfo=avx2)
    check_dtype(torch.float32, "cpu", cpuinfo=avx2)
    check_dtype(None, "cpu", cpuinfo=avx2)


def test_device_record_on_the_cpu() -> None:
    assert devices.device_record("cpu") == {"device": "cpu"}


@pytest.mark.parametrize("command", [
    ["eval", "--policy", "random", "--limit", "2"],
    ["train", "--set", "steps=1"],
    ["pretrain", "--set", "steps=1"],
    ["experiment", "--steps", "1", "--no-publish-readme"],
])
@pytest.mark.parametrize("device,needle", [
    ("cuda", "--device cuda: no CUDA GPU is visible"),
    ("cuda:7", "--device cuda:7: only 1 GPU(s) are visible"),
    ("tpu", "--device 'tpu': expected cpu, cuda, cuda:N or auto"),
])
def test_commands_refuse_an_unusable_device_before_writing(gpus, tmp_path: Path, command: list[str], device: str,
                                                          needle: str) -> None:
    gpus(0 if device == "cuda" else 1)
    out = tmp_path / "run"
    result = runner.invoke(app, [*command, "--device", device, "--out", str(out)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert needle in text and "Traceback" not in result.output
    assert not out.exists()


def test_janus_bf16_on_this_cpu_is_refused_before_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from janus_tiny import build_tiny_janus

    from irisbench.policies.janus import JanusPolicy

    ckpt = build_tiny_janus(tmp_path / "tiny")
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda cpuinfo=None: False)
    with pytest.raises(DeviceError, match="dtype bfloat16 on the CPU"):
        JanusPolicy.from_pretrained(ckpt, device="cpu", dtype="bf16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="--device cuda: no CUDA GPU"):
        JanusPolicy.from_pretrained(ckpt, device="cuda")
