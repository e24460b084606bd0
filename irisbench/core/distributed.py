"""One process, or several under ``torchrun`` / ``accelerate launch``: rank, world size and collectives.

``Dist.from_env(device)`` reads ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` (both launchers set them) and joins
the process group on first use. The backend follows the run's device (``irisbench.core.devices``), not merely
whether the host has a GPU: a CPU run (``--device cpu``, no GPU visible, or ``IRISBENCH_DEVICE=cpu`` as
the test suite sets) uses gloo, so more processes than GPUs work on the CPU; a CUDA run uses gloo for CPU
tensors beside NCCL for CUDA ones, each process on the GPU its ``LOCAL_RANK`` names, and a ``LOCAL_RANK``
beyond the node's GPU count stops with one line (``DeviceError``). Training (gradients, metrics) and evaluation
(barriers around the per-rank shards) share it; ``end()`` leaves the group cleanly at the end of a command.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    device: str = "cpu"

    @classmethod
    def from_env(cls, device: str | None = None) -> Dist:
        """Join the launcher's group (if any) for a run on ``device`` (``None``: the default device)."""
        from irisbench.core.devices import resolve_device

        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(device=resolve_device(device))
        import torch
        import torch.distributed as dist

        resolved = resolve_device(device)  # cuda -> cuda:LOCAL_RANK, or one line if there is no such GPU
        if not dist.is_initialized():
            cuda = resolved.startswith("cuda")
            if cuda:  # one GPU per process
                torch.cuda.set_device(torch.device(resolved))
            dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), resolved)

    def all_sum(self, values: list[float]) -> list[float]:
        if self.world_size == 1:
            return values
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def all_max(self, value: float) -> float:
        if self.world_size == 1:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t[0])

    def sync_grads(self, params: list[Any]) -> None:
        """Sum replicated gradients over ranks (sharded ones were reduce-scattered in backward)."""
        if self.world_size == 1:
            return
        import torch.distributed as dist
        from torch.distributed.tensor import DTensor

        for p in params:
            if p.grad is not None and not isinstance(p.grad, DTensor):
                dist.all_reduce(p.grad)

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()


def end() -> None:
    """Leave the process group, if one was joined, once every process got here (so launchers exit 0).

    Objects that hold the group (an FSDP model's device mesh) should be gone first: a group destroyed only at
    interpreter exit can abort the process there (gloo's worker threads outliving the interpreter), so
    unreachable ones are collected here and callers drop their trainer before calling this."""
    if "torch.distributed" not in sys.modules:
        return
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
