"""FSDP2 over a fake world of N ranks in one process, on meta parameters, and its memory tracker.

``fake_world(n)`` joins a fake process group (``torch.testing._internal.distributed.fake_pg.FakeStore`` and the
``"fake"`` backend: rank 0 of ``n``; every collective returns at once and moves no data) and lets the
project's own ``irisbench.train.sharding.shard`` run ``fully_shard`` on a model built on the ``meta`` device.
What the pinned torch (2.14.1) does without help, measured on a GPU-less host:

- ``init_device_mesh("meta", ...)`` has no device module to ask, and a ``cpu`` mesh makes FSDP2 put its
  all-gather and reduce-scatter buffers on the CPU, where they meet the meta parameters ("Tensor on device
  cpu is not on the expected device meta!");
- ``FSDPParamGroup.lazy_init`` refuses parameters still on meta (it expects ``to_empty`` first).

So, inside the block only: a ``meta`` mesh is a ``cpu`` mesh for the process group, while FSDP2's device
(``_get_device_from_mesh``) is ``meta`` with the CPU's no-op streams (``torch.cpu``), and the meta check is
skipped. Everything else is stock FSDP2: each rank's parameters are ``DTensor`` shards (``1/n`` of dim 0),
every unit's all-gather and the whole-model ``gathered`` block allocate full-size meta buffers, backward
reduce-scatters gradients into shards, AdamW keeps sharded moments. A CPU tensor meeting a meta tensor
still raises, as a CPU tensor meeting CUDA log-probs does on a GPU.

``fsdp_tracker`` is ``torch.distributed._tools.fsdp2_mem_tracker.FSDPMemTracker`` for the Janus policy:
the Janus adapter calls its units (embeddings, language model, heads) one by one at the top level and
twice per micro-batch (text part, image part), which the stock tracker refuses ("multiple iterative
calls"): a repeated call starts the unit's module statistics afresh (only the global peak by category is
read here), and a unit whose forward never ran (the root: the Janus adapter never calls it) gets them at
its backward hooks; frozen parameters take no gradient hook; the KL reference (a second FSDP root, which the
stock tracker ignores: its ``track_external`` is a no-op) has its sharded parameters registered too.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

from irisbench.core.errors import IrisbenchError


class FakeWorldError(IrisbenchError, RuntimeError):
    """A fake world cannot be set up (a process group is already joined, a bad world size)."""


@contextlib.contextmanager
def fake_world(world: int) -> Iterator[None]:
    """Rank 0 of a fake process group of ``world`` ranks, with FSDP2 allowed on meta parameters (module doc)."""
    import torch
    import torch.distributed as dist
    import torch.distributed.device_mesh as device_mesh
    import torch.distributed.fsdp._fully_shard._fsdp_collectives as fsdp_collectives
    import torch.distributed.fsdp._fully_shard._fsdp_init as fsdp_init
    import torch.distributed.fsdp._fully_shard._fsdp_param_group as fsdp_param_group
    import torch.distributed.fsdp._fully_shard._fsdp_state as fsdp_state
    import torch.distributed.fsdp._fully_shard._fully_shard as fully_shard_module
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if world < 1:
        raise FakeWorldError(f"a fake world needs at least one rank, got {world}")
    if dist.is_initialized():
        raise FakeWorldError("a process group is already joined in this process; a fake world needs its own")
    real_mesh, real_handle = device_mesh.init_device_mesh, fsdp_init._get_device_handle
    real_device = fsdp_init._get_device_from_mesh
    real_validate = fsdp_param_group.FSDPParamGroup._validate_no_meta_params

    def init_mesh(device_type: str, *args: Any, **kwargs: Any) -> Any:
        mesh = real_mesh("cpu" if device_type == "meta" else device_type, *args, **kwargs)
        mesh._irisbench_meta = device_type == "meta"
        return mesh

    def device_of(mesh: Any) -> Any:
        return torch.device("meta") if getattr(mesh, "_irisbench_meta", False) else real_device(mesh)

    def handle(device_type: str) -> Any:
        return torch.cpu if device_type == "meta" else real_handle(device_type)

    patches = [(device_mesh, "init_device_mesh", init_mesh), (fsdp_init, "_get_device_from_mesh", device_of),
               (fully_shard_module, "_get_device_from_mesh", device_of),
               (fsdp_param_group.FSDPParamGroup, "_validate_no_meta_params",
                lambda self: None if self.device.type == "meta" else real_validate(self))]
    patches += [(m, "_get_device_handle", handle) for m in (fsdp_collectives, fsdp_init, fsdp_param_group, fsdp_state)]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world)
    try:
        for owner, name, value in patches:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
        import gc

        gc.collect()  # meshes held by dropped models
        dist.destroy_process_group()


def local_bytes(t: Any) -> int:
    """Bytes this rank holds of ``t``: its local shard for a ``DTensor``, else the whole tensor."""
    from torch.distributed.tensor import DTensor

    return int((t.to_local() if isinstance(t, DTensor) else t).nbytes)


class _JanusHooks:
    """``MemTracker`` overrides for the Janus policy (see the module doc): frozen parameters take no gradient
    hook; module statistics are skipped where the stock hooks refuse a repeated top-level call."""

    def _track_module_params_and_buffers(self, module: Any, install_grad_hooks: bool = True) -> Any:
        frozen = [p for p in module.parameters() if not p.requires_grad
                  and self._param_to_grad_hook_handles.get(p, None) is None]
        for p in frozen:  # register_hook refuses them: mark them as hooked
            self._param_to_grad_hook_handles[p] = ()
        try:
            return super()._track_module_params_and_buffers(module, install_grad_hooks)
        finally:
            for p in frozen:
                del self._param_to_grad_hook_handles[p]

    def _pre_fw_hook(self, module: Any, inputs: Any) -> None:
        with contextlib.suppress(NotImplementedError):  # a repeated top-level call: no module statistics
            super()._pre_fw_hook(module, inputs)

    def _pre_bw_hook(self, module: Any, args: Any) -> None:
        if module in self.memory_tracking:
            super()._pre_bw_hook(module, args)

    def _post_bw_hook(self, module: Any, args: Any) -> None:
        if module in self.memory_tracking:
            super()._post_bw_hook(module, args)


def mem_tracker() -> Any:
    """A ``MemTracker`` with the Janus overrides (the single-process dry run's)."""
    from torch.distributed._tools.mem_tracker import MemTracker

    class _Tracker(_JanusHooks, MemTracker):
        pass

    return _Tracker()


def fsdp_tracker(model: Any, optimizer: Any, reference: Any = None) -> Any:
    """An ``FSDPMemTracker`` of the sharded ``model`` and ``optimizer`` with the Janus overrides; the sharded
    parameters of ``reference`` (another FSDP root, or None) are counted as sharded parameters too."""
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker, _FSDPModMemStats, _FSDPRefType

    from irisbench.train.sharding import fsdp_modules

    class _Tracker(_JanusHooks, FSDPMemTracker):
        def _fsdp_state_pre_forward(self, fsdp_mod: Any, orig: Any) -> Any:
            inner = super()._fsdp_state_pre_forward(fsdp_mod, orig)

            def guarded(*args: Any, **kwargs: Any) -> Any:
                if fsdp_mod in self.memory_tracking and not self._mod_tracker.is_bw:
                    del self.memory_tracking[fsdp_mod]  # a repeated top-level call: its statistics start afresh
                return inner(*args, **kwargs)

            return guarded

        def _fsdp_param_group_pre_backward(self, fsdp_mod: Any, orig: Any) -> Any:
            return self._with_stats(fsdp_mod, super()._fsdp_param_group_pre_backward(fsdp_mod, orig))

        def _fsdp_param_group_post_backward(self, fsdp_mod: Any, orig: Any) -> Any:
            return self._with_stats(fsdp_mod, super()._fsdp_param_group_post_backward(fsdp_mod, orig))

        def _with_stats(self, fsdp_mod: Any, inner: Any) -> Any:
            def run(*args: Any, **kwargs: Any) -> Any:
                if fsdp_mod not in self.memory_tracking:  # a unit whose forward never ran (the root)
                    self.memory_tracking[fsdp_mod] = _FSDPModMemStats(type(fsdp_mod).__name__)
                return inner(*args, **kwargs)

            return run

        def note_gathered(self) -> None:
            """Book the whole parameters of every unit as unsharded parameters (inside ``gathered``, which
            unshards outside any forward hook; else the tracker books them as activations)."""
            for unit in fsdp_modules(model):  # the policy's (the reference is not gathered for sampling)
                group = unit._get_fsdp_state()._fsdp_param_group
                for fsdp_param in group.fsdp_params if group is not None else []:
                    whole = getattr(fsdp_param, "_unsharded_param", None)
                    if whole is not None:
                        self._update_and_maybe_create_winfos(whole, _FSDPRefType.UNSHARDED_PARAM, update_existing=True)

        def _register_module_and_optimizer_hooks(self) -> None:
            super()._register_module_and_optimizer_hooks()
            for unit in fsdp_modules(reference) if reference is not None else []:
                group = unit._get_fsdp_state()._fsdp_param_group
                if group is not None:
                    self._instrument_fsdp_sharded_params_grads(group)

    return _Tracker(model, optimizer)


def tracker_peak(tracker: Any, which: str = "peak") -> dict[str, int]:
    """Peak (or ``"current"``) bytes by category of a ``MemTracker`` / ``FSDPMemTracker`` (summed over devices),
    plus ``total``; keys are the tracker's category names, lower case with underscores (``sharded_param``)."""
    snap = tracker.get_tracker_snapshot(which)
    out: Counter[str] = Counter()
    for dev_snap in snap.values():
        for kind, nbytes in dev_snap.items():
            key = str(getattr(kind, "value", kind)).lower().replace(" ", "_")
            out["total" if "total" in key else key] += int(nbytes)
    return dict(out)


__all__ = ["FakeWorldError", "fake_world", "fsdp_tracker", "local_bytes", "mem_tracker", "tracker_peak"]
