"""Process-group setup from torchrun's environment and model wrapping (DDP / FSDP). The collectives
themselves live in the bottom-layer module vlfw.distributed."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vlfw.distributed import barrier
from vlfw.errors import ConfigError


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    strategy: str = "ddp"
    created_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        barrier()

    def cleanup(self) -> None:
        if self.created_group and dist.is_initialized():
            dist.destroy_process_group()
            self.created_group = False


def resolve_device(name: str, local_rank: int) -> torch.device:
    name = str(name or "auto")
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name} but no CUDA device is available; use device=auto or cpu")
        return torch.device(f"cuda:{local_rank}") if name == "cuda" else torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")


def setup_distributed(config: Any) -> DistributedContext:
    """Join the process group torchrun describes (WORLD_SIZE/RANK/LOCAL_RANK), if any."""
    section = config.get("distributed") or {}
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(config.get("device", "auto"), local_rank)
    strategy = str(section.get("strategy", "ddp"))  # values checked when the config is loaded
    context = DistributedContext(rank, world_size, local_rank, device, strategy)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1:
        if dist.is_initialized():
            context.rank, context.world_size = dist.get_rank(), dist.get_world_size()
        else:
            backend = str(section.get("backend", "auto"))
            if backend == "auto":
                backend = "nccl" if device.type == "cuda" else "gloo"
            timeout = datetime.timedelta(minutes=float(section.get("timeout_minutes", 30)))
            dist.init_process_group(backend=backend, timeout=timeout,
                                    device_id=device if device.type == "cuda" else None)
            context.created_group = True
    return context


def wrap_model(model: nn.Module, context: DistributedContext, config: Any) -> nn.Module:
    """The module that trains: DDP or FSDP (fully_shard) across ranks, the model itself alone."""
    if not context.enabled:
        return model
    section = config.get("distributed") or {}
    if context.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        # shard the top-level blocks that run a forward (containers such as ModuleDict are
        # looked into), then the root, which holds the remaining parameters
        def shard_children(module: nn.Module) -> None:
            for child in module.children():
                if not any(p.requires_grad for p in child.parameters()):
                    continue
                if type(child).forward is nn.Module.forward:
                    shard_children(child)
                else:
                    fully_shard(child)

        shard_children(model)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids,
                                   find_unused_parameters=bool(section.get("find_unused_parameters", False)))


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model
