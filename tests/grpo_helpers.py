"""Shared by the trainer and sharding tests: gradients of a trained ``GRPOTrainer``, their comparison, and
a 2-process ``torchrun`` of the trainer that checks both ranks end with the same weights and gradient."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

_RANK = """
import os, sys
import numpy as np
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from irisbench.train.config import resolve_config
from irisbench.train.trainer import GRPOTrainer

def full(x):  # a collective for sharded tensors: every rank calls it in the same order
    return (x.full_tensor() if isinstance(x, DTensor) else x).detach().float().numpy().ravel()

t = GRPOTrainer(resolve_config(sys.argv[2], sys.argv[3:]), sys.argv[1], progress=False,
                allow_config_change=os.environ.get("ALLOW_CONFIG_CHANGE") == "1")
t.train()
params = list(t.policy.model.parameters())
weights = np.concatenate([full(p) for p in params])
grads = np.concatenate([full(p.grad) for p in params if p.grad is not None])
np.save(os.path.join(sys.argv[1], f"w{t.dist.rank}.npy"), weights)
np.save(os.path.join(sys.argv[1], f"g{t.dist.rank}.npy"), grads)
del t, params  # the sharded model holds the process group (FSDP's mesh): free it before leaving the group
from irisbench.core.distributed import end
end()
"""


def grads(trainer: Any) -> np.ndarray:
    """The last step's (synchronised) gradient, flattened: it stays on the parameters after the step."""
    return np.concatenate([p.grad.detach().float().numpy().ravel() for p in trainer.policy.model.parameters()
                           if p.grad is not None])


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape and equal to 1e-5 of ``a``'s largest magnitude."""
    return a.shape == b.shape and float(np.abs(a - b).max()) <= 1e-5 * float(np.abs(a).max())


def torchrun_train(tmp_path: Path, out: Path, preset: str, args: list[str], *,
                   allow_config_change: bool = False) -> Path:
    """Train ``preset`` with ``args`` as 2 gloo processes into ``out``; assert both ranks hold the same whole
    weights and gradient afterwards; return ``out`` (``g0.npy`` holds the gradient)."""
    script = tmp_path / "child.py"
    script.write_text(_RANK)
    torchrun = Path(sys.executable).with_name("torchrun")
    here = Path(__file__).resolve().parent  # the tests (grpo helpers, tiny models), then this checkout's irisbench
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")]),
           "ALLOW_CONFIG_CHANGE": "1" if allow_config_change else "0"}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", str(script), str(out), preset, *args],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert np.array_equal(np.load(out / "w0.npy"), np.load(out / "w1.npy"))
    assert np.array_equal(np.load(out / "g0.npy"), np.load(out / "g1.npy"))
    return out
