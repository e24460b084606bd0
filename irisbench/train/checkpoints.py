"""Training checkpoints shared by pretraining and GRPO: atomic folders, optimizer state without pickle.

A checkpoint ``<out>/checkpoints/step-N/`` is the policy's own save folder plus ``optimizer.safetensors``
(optimizer moments and step counts, the torch RNG state) and ``trainer_state.json`` (param groups,
scheduler, config, step, anything the loop adds). It is written into a temporary folder and renamed, and
``trainer_state.json`` is written last, so a folder without it is ignored: ``kill -9`` at any moment leaves
a resumable run. Every checkpoint folder also gets a Hugging Face model card, ``README.md``
(``irisbench.train.model_card``), written before the folder is renamed into place. ``trim_metrics`` drops metric
lines logged after the checkpoint a run resumes from.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from irisbench.core.errors import read_json

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"


def save_checkpoint(out_dir: Path, step: int, policy: Any, optimizer: Any, scheduler: Any, state: dict[str, Any],
                    *, keep_last: int | None = None, fmt: str = "irisbench.train-state",
                    model_state: dict[str, Any] | None = None,
                    optimizer_state: tuple[dict[str, Any], list[dict[str, Any]]] | None = None) -> Path:
    """Write ``checkpoints/step-{step}`` atomically; ``state`` joins the JSON (config, elapsed time, ...).

    ``model_state`` / ``optimizer_state``: whole states gathered from a sharded model (``irisbench.train.sharding``),
    written in place of the local ones.
    """
    import torch
    from safetensors.torch import save_file

    root = Path(out_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    if model_state is not None:
        policy.save(tmp, state_dict=model_state)
    else:
        policy.save(tmp)
    tensors, groups = optimizer_state if optimizer_state is not None else optimizer_tensors(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, str(tmp / OPTIMIZER_FILE), metadata={"format": fmt})
    full = {"format": fmt, "version": 1, "step": step, "param_groups": groups,
            "scheduler": scheduler.state_dict(), **state}
    with open(tmp / STATE_FILE, "w") as f:  # written last: its presence marks a complete folder
        json.dump(full, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    from irisbench.train.model_card import write_model_card

    write_model_card(tmp, out_dir)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep_last is not None:
        for _, old in complete_checkpoints(out_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def restore_optimizer(ckpt: Path, optimizer: Any, scheduler: Any,
                      loader: Callable[[dict[str, Any], list[dict[str, Any]]], None] | None = None) -> dict[str, Any]:
    """Load optimizer and scheduler state from a checkpoint folder; returns its ``trainer_state.json``.

    ``loader(tensors, param_groups)`` replaces ``load_optimizer`` (a sharded optimizer keeps its shard).
    """
    from safetensors.torch import load_file

    state = read_json(ckpt / STATE_FILE, kind="checkpoint state")
    tensors = load_file(str(ckpt / OPTIMIZER_FILE))
    if loader is not None:
        loader(tensors, state["param_groups"])
    else:
        load_optimizer(optimizer, tensors, state["param_groups"])
    scheduler.load_state_dict(state["scheduler"])
    return {**state, "rng.torch": tensors.get("rng.torch")}


def optimizer_tensors(optimizer: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import torch

    sd = optimizer.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if not isinstance(val, torch.Tensor):
                val = torch.tensor(val)
            tensors[f"state.{idx}.{key}"] = val.detach().contiguous()
    groups = []
    for g in sd["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()})
    return tensors, groups


def load_optimizer(optimizer: Any, tensors: dict[str, Any], groups: list[dict[str, Any]]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        if not name.startswith("state."):
            continue
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = val
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def complete_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint under ``out_dir/checkpoints``, oldest first."""
    root = Path(out_dir) / CHECKPOINTS
    found = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith("step-") and (p / STATE_FILE).is_file():
                try:
                    found.append((int(p.name[5:]), p))
                except ValueError:
                    continue
    return sorted(found)


def trim_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines logged after ``last_step`` (they belong to the interrupted, lost steps)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line torn by kill -9
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(x + "\n" for x in keep))
    os.replace(tmp, path)
