"""The core image-text contrastive loss and ITM hard-negative sampling (vlfw.losses.contrastive):
across 2 gloo processes vs one process on the global batch, and the registered losses."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vlfw.data.batch import Batch
from vlfw.losses.contrastive import image_text_contrastive, itm_pairs, sample_hard_negatives
from vlfw.registry import LOSSES
from vlfw.testing import free_port

WORLD, LOCAL, DIM = 2, 3, 8


def global_inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(WORLD * LOCAL, 5, generator=g), torch.randn(WORLD * LOCAL, 5, generator=g)


def make_projection():
    torch.manual_seed(0)
    return torch.nn.Linear(5, DIM), torch.nn.Parameter(torch.tensor(2.0))


def itc(projection, scale, images, texts):
    return image_text_contrastive(F.normalize(projection(images), dim=-1), F.normalize(projection(texts), dim=-1), scale)


def worker(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        images, texts = global_inputs()
        rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
        projection, scale = make_projection()
        result = itc(projection, scale, images[rows], texts[rows])
        result.loss.backward()
        grads = [p.grad for p in list(projection.parameters()) + [scale]]
        for grad in grads:  # what DDP does: average parameter gradients over ranks
            dist.all_reduce(grad)
            grad /= WORLD
        # hard negatives: make every sample's most similar non-positive partner live on the other rank
        eye = torch.eye(WORLD * LOCAL)
        partner = (torch.arange(WORLD * LOCAL) + LOCAL) % (WORLD * LOCAL)
        text_features, image_features = eye, eye[partner]
        contrast = image_text_contrastive(image_features[rows], text_features[rows], torch.tensor(5.0))
        local_images = torch.full((LOCAL, 3, 2, 2), float(rank))
        local_ids = torch.arange(LOCAL)[:, None].repeat(1, 4 + rank) + 100 * rank  # unequal lengths
        pair_images, pair_ids, pair_mask, labels = itm_pairs(local_images, local_ids,
                                                             torch.ones_like(local_ids), contrast)
        results[rank] = {"loss": result.loss.item(), "grads": [g.clone() for g in grads],
                         "offset": contrast.offset, "negative_image_rank": pair_images[2 * LOCAL:, 0, 0, 0].tolist(),
                         "negative_text_ids": pair_ids[LOCAL:2 * LOCAL, 0].tolist(), "labels": labels.tolist(),
                         "shape": tuple(pair_ids.shape)}
    finally:
        dist.destroy_process_group()


def test_itc_and_hard_negatives_across_ranks():
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(worker, args=(free_port(), results), nprocs=WORLD, join=True)
    images, texts = global_inputs()
    projection, scale = make_projection()
    reference = itc(projection, scale, images, texts)
    reference.loss.backward()
    expected = [p.grad for p in list(projection.parameters()) + [scale]]
    for rank in range(WORLD):
        got = results[rank]
        assert abs(got["loss"] - reference.loss.item()) < 1e-5
        for a, b in zip(got["grads"], expected):
            assert torch.allclose(a, b, atol=1e-5), (a, b)
        assert got["offset"] == rank * LOCAL
        other = 1 - rank
        assert got["negative_image_rank"] == [float(other)] * LOCAL
        assert got["negative_text_ids"] == [100 * other + i for i in range(LOCAL)]
        assert got["labels"] == [1] * LOCAL + [0] * (2 * LOCAL)
        assert got["shape"] == (3 * LOCAL, 5)  # texts padded to the longest rank


def test_hard_negatives_never_pick_the_positive():
    torch.manual_seed(0)
    similarity = torch.randn(4, 8) * 3
    similarity[torch.arange(4), torch.arange(4) + 2] = 50.0  # the positives dominate
    for _ in range(20):
        picked = sample_hard_negatives(similarity, offset=2)
        assert not bool((picked == torch.arange(4) + 2).any())


def test_registered_losses_learned_and_fixed_temperature():
    g = torch.Generator().manual_seed(3)
    image = F.normalize(torch.randn(5, 6, generator=g), dim=-1)
    text = F.normalize(torch.randn(5, 6, generator=g), dim=-1)
    target = torch.arange(5)

    def symmetric(logits):
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2

    fixed = LOSSES.build("contrastive", temperature=0.1)(Batch(), {"image_embeddings": image, "text_embeddings": text})
    assert torch.equal(fixed, symmetric(image @ text.t() / 0.1))
    scale = torch.tensor(1.5)
    outputs = {"image_embeddings": image, "text_embeddings": text, "logit_scale": scale}
    learned = LOSSES.build("image_text_contrastive")(Batch(), outputs)
    assert torch.allclose(learned, symmetric(scale.exp() * image @ text.t()))
    # without the model's logit_scale: the fixed temperature
    without = LOSSES.build("image_text_contrastive", temperature=0.2)(Batch(), {"image_embeddings": image,
                                                                                "text_embeddings": text})
    assert torch.allclose(without, symmetric(image @ text.t() / 0.2))
    # the learned scale is clamped at max_logit_scale
    big = dict(outputs, logit_scale=torch.tensor(10.0))
    clamped = LOSSES.build("image_text_contrastive", max_logit_scale=4.0)(Batch(), big)
    assert torch.allclose(clamped, symmetric(4.0 * image @ text.t()))
