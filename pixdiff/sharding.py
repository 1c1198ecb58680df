"""FSDP2 for networks that do not fit one device with Adam (``pixdiff train --fsdp``).

``torch.distributed.fsdp.fully_shard`` shards every residual / attention / transformer block and
then the whole denoiser: each process keeps 1/world of the weights, gradients and Adam moments,
and gathers a block's weights only while it runs. The EMA is kept sharded the same way.

Checkpoints stay what they are without FSDP — one set of full safetensors that loads in one
process: the weights, the EMA and the optimizer state are gathered to full tensors before rank 0
writes them, and the optimizer state is stored under the same parameter indices a plain
``AdamW(denoiser.parameters())`` uses, so a run can move between FSDP, DDP and one process.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["shard", "is_sharded", "local", "full_tensors", "shard_like", "full_optimizer_state", "load_optimizer_state"]

BLOCKS = ("ResBlock", "AttentionBlock", "TransformerBlock")


def shard(module: nn.Module) -> None:
    """fully_shard each block (by class name, so any pixdiff backbone works), then the root."""
    from torch.distributed.fsdp import fully_shard

    for m in list(module.modules())[1:]:
        if type(m).__name__ in BLOCKS:
            fully_shard(m)
    fully_shard(module)


def is_sharded(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of a DTensor (the tensor itself otherwise)."""
    return t.to_local() if is_sharded(t) else t


def full_tensors(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Full CPU tensors of a (partly) sharded dict. A collective: every process must call it."""
    return {k: (v.full_tensor() if is_sharded(v) else v).detach().cpu() for k, v in sd.items()}


def shard_like(full: dict[str, torch.Tensor], module: nn.Module, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Shard full tensors the way ``module``'s state dict is sharded (for the EMA). Every process
    holds the same full tensors (read from the same checkpoint), so no communication is needed."""
    from torch.distributed.tensor import distribute_tensor

    out = {}
    for k, ref in module.state_dict().items():
        v = full[k].to(device=ref.device, dtype=dtype if ref.is_floating_point() else ref.dtype)
        out[k] = distribute_tensor(v, ref.device_mesh, ref.placements, src_data_rank=None) if is_sharded(ref) else v
    return out


def _names(module: nn.Module) -> list[str]:
    return [n for n, p in module.named_parameters() if p.requires_grad]


def full_optimizer_state(module: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """The optimizer state as full tensors keyed by parameter index (``opt.state_dict()``'s form
    for the unsharded model). A collective; the result is complete on rank 0."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    osd = get_optimizer_state_dict(module, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    index = {n: i for i, n in enumerate(_names(module))}
    state = {index[n]: dict(s) for n, s in osd.get("state", {}).items()}
    groups = [dict(g, params=[index[n] for n in g["params"]]) for g in osd.get("param_groups", [])]
    return {"state": state, "param_groups": groups}


def load_optimizer_state(module: nn.Module, opt: torch.optim.Optimizer, sd: dict) -> None:
    """Load an index-keyed full optimizer state (every process holds it) into a sharded optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = _names(module)
    osd = {"state": {names[int(i)]: s for i, s in sd["state"].items()},
           "param_groups": [dict(g, params=[names[int(i)] for i in g["params"]]) for g in sd["param_groups"]]}
    set_optimizer_state_dict(module, opt, osd, options=StateDictOptions(full_state_dict=True))
