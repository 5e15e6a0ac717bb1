"""The grounding losses across 2 gloo ranks (one image each, unequal positive counts) give the
one-process loss and, after DDP's gradient mean, the one-process gradient of the 2-image batch."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vlfw.testing import free_port
from vlfw_fiber import grounding

WORLD = 2


def _setup():
    torch.manual_seed(0)
    head = grounding.GroundingHead([8, 16], text_dim=12, width=32, num_convs=1, strides=(8, 16))
    generator = torch.Generator().manual_seed(1)
    maps = [torch.randn(WORLD, 8, 8, 8, generator=generator), torch.randn(WORLD, 16, 4, 4, generator=generator)]
    text = torch.randn(WORLD, 5, 12, generator=generator)
    mask = torch.ones(WORLD, 5, dtype=torch.bool)
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 60.0, 60.0], [30.0, 6.0, 50.0, 20.0]]),  # many positives
                "positive_map": torch.tensor([[0, 1, 0, 0, 0], [0, 0, 1, 1, 0]], dtype=torch.bool)},
               {"boxes": torch.tensor([[10.0, 10.0, 26.0, 22.0]]),  # few
                "positive_map": torch.tensor([[0, 1, 1, 0, 0]], dtype=torch.bool)}]
    return head, maps, text, mask, targets


def _losses_and_grads(head, maps, text, mask, targets):
    losses = head.loss(head(maps, text, mask), targets)
    sum(losses.values()).backward()
    return {k: v.item() for k, v in losses.items()}, [p.grad.clone() for p in head.parameters() if p.grad is not None]


def worker(rank: int, port: int, results) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        head, maps, text, mask, targets = _setup()
        rows = slice(rank, rank + 1)
        losses, grads = _losses_and_grads(head, [m[rows] for m in maps], text[rows], mask[rows], targets[rows])
        for grad in grads:  # what DDP does: the mean of the parameter gradients over ranks
            dist.all_reduce(grad)
            grad /= WORLD
        results[rank] = {"losses": losses, "grads": grads}
    finally:
        dist.destroy_process_group()


def test_losses_normalised_by_the_global_positive_count_across_ranks():
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(worker, args=(free_port(), results), nprocs=WORLD, join=True)
    reference_losses, reference_grads = _losses_and_grads(*_setup())
    for name, value in reference_losses.items():  # the global loss is the mean of the rank losses
        mean = sum(results[rank]["losses"][name] for rank in range(WORLD)) / WORLD
        assert abs(mean - value) < 1e-4 * max(1.0, abs(value)), (name, mean, value)
    assert results[0]["losses"] != results[1]["losses"]
    for rank in range(WORLD):
        for got, expected in zip(results[rank]["grads"], reference_grads):
            assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)
