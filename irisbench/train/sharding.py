"""Fully sharded data parallelism for the GRPO trainer (``parallel: fsdp``): the option for 7B models.

With ``parallel: ddp`` every rank holds the whole policy and optimizer and gradients are summed with
``all_reduce``. With ``parallel: fsdp`` PyTorch's FSDP2 (``torch.distributed.fsdp.fully_shard``) keeps
1/world of every parameter, gradient and AdamW moment on each rank (ZeRO-3), gathering one unit's
parameters at a time for the teacher-forced pass and reduce-scattering its gradients in backward.
The update equals the ``ddp`` one: losses are normalised by global counts, so gradients are *summed*
over ranks (FSDP's default divides by the world size; the divide factor is set to 1).

The policy says what its units are (``fsdp_units()``): submodules that do not nest and together hold
every trainable parameter, in practice the decoder blocks, the embeddings, the final norm and the heads;
units sharing a parameter (a head tied to the embeddings) become one group, and the root model's unit
takes what is left (Janus's frozen understanding tower and VQ model). The policies call these units one
by one (the Janus adapter runs embeddings, language model and heads separately), never the root's
``forward``, where FSDP2 would settle its unit tree on first use; ``shard`` settles it from the root
right away (FSDP2's ``_lazy_init``, the one private call here; torch is pinned).

Sampling is autoregressive with a different number of steps on each rank (a CoT stops at its EOS), so
it runs under ``gathered(policy)``: every unit is all-gathered once and kept whole until the block ends,
and no collective runs inside (each rank may call the model any number of times). In-training
evaluation (prompts sharded by rank) runs the same way. Checkpoints are written from full state
dicts gathered onto rank 0 (``torch.distributed.checkpoint.state_dict``), in exactly the layout of an
unsharded run, so a run may resume with either setting.

Where this departs from IRIS's released code: its 1B recipe runs DeepSpeed ZeRO-3 with CPU offload;
DeepSpeed is not a dependency here, FSDP2 is PyTorch's own ZeRO-3 (no offload option is exposed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from irisbench.core.errors import IrisbenchError

PARALLEL_MODES = ("ddp", "fsdp")


class ShardingError(IrisbenchError, ValueError):
    """A policy that cannot be sharded as asked."""


def fsdp_modules(model: Any) -> list[Any]:
    """The FSDP units inside ``model``, or [] for an unsharded model."""
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def is_sharded(policy: Any) -> bool:
    return bool(fsdp_modules(policy.model))


def shard(policy: Any) -> int:
    """Wrap ``policy.fsdp_units()`` in place with ``fully_shard`` over all ranks; returns the number of units.

    Units must not nest and must together hold every trainable parameter; units that share parameters
    (a head tied to the embeddings) become one FSDP group; the root's unit holds the rest. Under a
    launcher the process group is already up; a single process gets a group of one.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    name = getattr(policy, "name", type(policy).__name__)
    units_of = getattr(policy, "fsdp_units", None)
    if units_of is None:
        raise ShardingError(f"policy {name!r} does not say how to shard itself (no fsdp_units()); "
                            "train it with parallel=ddp")
    groups = _groups(list(units_of()), name)
    held = {id(p) for group in groups for m in group for p in m.parameters()}
    loose = [n for n, p in policy.model.named_parameters() if p.requires_grad and id(p) not in held]
    if loose:
        raise ShardingError(f"policy {name!r}: trainable parameters outside every FSDP unit: {loose[:5]}"
                            f"{' ...' if len(loose) > 5 else ''}; freeze them or add their module to fsdp_units()")
    device_type = next(policy.model.parameters()).device.type  # shard where the policy lives
    if not dist.is_initialized():  # one process without a launcher: a group of one (every shard is whole)
        # FSDP's collectives on CUDA tensors need NCCL (gloo takes CPU tensors only)
        backend = "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    for group in groups:
        fully_shard(group if len(group) > 1 else group[0], mesh=mesh)
    root = fully_shard(policy.model, mesh=mesh)
    # The policies call units one by one (embeddings, blocks, heads), never the root's forward, which is
    # where FSDP2 would settle the unit tree; settle it now, from the root.
    root._get_fsdp_state()._lazy_init()
    for unit in fsdp_modules(policy.model):
        unit.set_gradient_divide_factor(1.0)  # losses carry the global normaliser: sum, do not average
        if device_type == "cpu":
            unit.set_force_sum_reduction_for_comms(True)  # gloo has no PREMUL_SUM
    return len(groups) + 1


def _groups(units: list[Any], name: str) -> list[list[Any]]:
    """Units that share parameters (tied embeddings and head) merged into one FSDP group; nesting refused."""
    groups: list[list[Any]] = []
    owners: list[set[int]] = []
    for unit in units:
        ids = {id(p) for p in unit.parameters()}
        hit = [k for k, o in enumerate(owners) if o & ids]
        for k in hit:
            for other in groups[k]:
                if any(m is unit for m in other.modules()) or any(m is other for m in unit.modules()):
                    raise ShardingError(f"policy {name!r}: FSDP units must not nest ({type(unit).__name__} and "
                                        f"{type(other).__name__})")
        merged = [m for k in hit for m in groups[k]] + [unit]
        merged_ids = set().union(ids, *(owners[k] for k in hit))
        groups = [g for k, g in enumerate(groups) if k not in hit] + [merged]
        owners = [o for k, o in enumerate(owners) if k not in hit] + [merged_ids]
    return groups


@contextlib.contextmanager
def gathered(policy: Any) -> Iterator[None]:
    """Whole parameters on every rank for the block (no-op when unsharded); all ranks must enter it.

    Entering all-gathers every unit (a collective); inside, calls run locally and any number of times;
    leaving frees the gathered copies (local).
    """
    units = fsdp_modules(policy.model)
    for unit in units:
        unit.unshard()
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(True, recurse=False)


def _options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(policy: Any) -> dict[str, Any] | None:
    """The whole model's state dict on rank 0 (``None`` elsewhere); a collective when sharded."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    if not is_sharded(policy):
        return None
    sd = get_model_state_dict(policy.model, options=_options())
    if dist.get_rank() != 0:
        return None
    # tied parameters arrive as separate copies: share them again, so that save_pretrained sees the tie
    # (and writes the tensor once) exactly as for an unsharded model
    first: dict[int, str] = {}
    for name, p in policy.model.named_parameters(remove_duplicate=False):
        source = first.setdefault(id(p), name)
        if source != name and source in sd and name in sd:
            sd[name] = sd[source]
    return sd


def save_policy(policy: Any, path: Path, *, main: bool) -> None:
    """Write ``policy``'s save folder on the main rank; every rank calls it (gathers when sharded)."""
    sd = full_model_state(policy)
    if main:
        policy.save(path, state_dict=sd) if sd is not None else policy.save(path)


def _trainable_names(model: Any) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def full_optimizer_tensors(policy: Any, optimizer: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Optimizer state as ``irisbench.train.checkpoints.optimizer_tensors`` lays it out (``state.{index}.{key}``,
    index = position among trainable parameters), gathered whole; a collective, meaningful on rank 0."""
    import torch
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    sd = get_optimizer_state_dict(policy.model, optimizer, options=_options())
    index = {name: i for i, name in enumerate(_trainable_names(policy.model))}
    tensors = {}
    for name, st in sd.get("state", {}).items():
        for key, val in st.items():
            val = val if isinstance(val, torch.Tensor) else torch.tensor(val)
            tensors[f"state.{index[name]}.{key}"] = val.detach().contiguous()
    groups = []
    for g in sd.get("param_groups", []):
        row = {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        row["params"] = [index[n] for n in g["params"]]
        groups.append(row)
    return tensors, groups


def load_full_optimizer_tensors(policy: Any, optimizer: Any, tensors: dict[str, Any],
                                groups: list[dict[str, Any]]) -> None:
    """The inverse of ``full_optimizer_tensors``: every rank passes the whole state, each keeps its shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = _trainable_names(policy.model)
    state: dict[str, dict[str, Any]] = {}
    for key, val in tensors.items():
        if key.startswith("state."):
            _, idx, field = key.split(".", 2)
            state.setdefault(names[int(idx)], {})[field] = val
    param_groups = [{**{k: (tuple(v) if k == "betas" else v) for k, v in g.items()},
                     "params": [names[i] for i in g["params"]]} for g in groups]
    set_optimizer_state_dict(policy.model, optimizer, {"state": state, "param_groups": param_groups},
                             options=StateDictOptions(full_state_dict=True))
