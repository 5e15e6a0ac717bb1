"""Collectives every layer may use: rank and world size, sums, object gathers, and the gather
that keeps the gradient on the local rows (for contrastive losses).

This is a bottom-layer module: it imports nothing from vlfw. Outside an initialised process
group every function is the one-process identity.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F


def is_distributed() -> bool:
    """Whether a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks in place (and return it)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (picklable objects)."""
    if is_distributed():
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank."""
    if is_distributed():
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]
    return obj


def _pad_to(tensor: torch.Tensor, shape: list[int], value: float) -> torch.Tensor:
    pads: list[int] = []
    for dim in reversed(range(tensor.dim())):
        pads += [0, shape[dim] - tensor.shape[dim]]
    return F.pad(tensor, pads, value=value) if any(pads) else tensor


def gather_sizes(tensor: torch.Tensor) -> torch.Tensor:
    """(world, dim): the shape of `tensor` on every rank."""
    shape = torch.tensor(tensor.shape, device=tensor.device, dtype=torch.long)
    if not is_distributed():
        return shape[None]
    shapes = [torch.empty_like(shape) for _ in range(dist.get_world_size())]
    dist.all_gather(shapes, shape)
    return torch.stack(shapes)


def all_gather_padded(tensor: torch.Tensor, pad_value: float = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate `tensor` from all ranks along dim 0, without gradient.

    Ranks may hold different shapes: every dim is padded to the largest, the rows are then
    trimmed back to each rank's real count. Returns (gathered, rows per rank).
    """
    shapes = gather_sizes(tensor)
    rows = shapes[:, 0]
    if not is_distributed():
        return tensor.detach(), rows
    largest = shapes.max(dim=0).values.tolist()
    padded = _pad_to(tensor.detach().contiguous(), largest, pad_value)
    parts = [torch.empty_like(padded) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(n)] for part, n in zip(parts, rows)]), rows


class _GatherKeepLocal(torch.autograd.Function):
    """all_gather whose backward returns the gradient of the local slot, times the world size.

    Every rank computes the same global loss; the local features are the only live slot, so the
    gradient reaching them is d(global loss)/d(local features). DDP then averages parameter
    gradients over ranks: scaling by the world size makes that average the global-batch gradient
    (exactly what one process would get on the whole batch), with no collective in backward.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        rank, size = world()
        gathered, rows = all_gather_padded(tensor)
        ctx.start = int(rows[:rank].sum())
        ctx.rows = int(rows[rank])
        ctx.size = size
        return gathered

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad[ctx.start: ctx.start + ctx.rows] * ctx.size


def gather_with_local_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(rows of all ranks concatenated, offset of this rank's rows); the identity in one process.

    The gradient flows into this rank's rows only (see `_GatherKeepLocal`)."""
    rank, size = world()
    if size == 1:
        return tensor, 0
    gathered = _GatherKeepLocal.apply(tensor)
    rows = gather_sizes(tensor)[:, 0]
    return gathered, int(rows[:rank].sum())
