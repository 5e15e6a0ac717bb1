import pytest
import torch

from vlfw.data.batch import Batch
from vlfw.metrics.retrieval import retrieval_recall_at_k
from vlfw.registry import METRICS


def _brute_force(images, texts, owners, ks):
    sim = texts @ images.T
    result = {}
    for k in ks:
        top = sim.topk(min(k, sim.shape[1]), dim=1).indices
        result[f"ir_r{k}"] = 100.0 * sum(int(owners[t] in top[t].tolist()) for t in range(len(texts))) / len(texts)
    for k in ks:
        top = sim.T.topk(min(k, sim.shape[0]), dim=1).indices
        result[f"tr_r{k}"] = 100.0 * sum(int(any(owners[t] == i for t in top[i].tolist()))
                                         for i in range(len(images))) / len(images)
    result["r_mean"] = sum(result.values()) / len(result)
    return result


def test_recall_matches_brute_force_with_chunks():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(37, 16, generator=g)
    # 1 to 5 captions per image, in shuffled order
    owners = torch.cat([torch.arange(37)] + [torch.arange(37)[torch.arange(37) % m == 0] for m in (2, 3, 4, 5)])
    owners = owners[torch.randperm(len(owners), generator=g)]
    texts = images[owners] + 1.5 * torch.randn(len(owners), 16, generator=g)
    ks = (1, 5, 10)
    expected = _brute_force(images, texts, owners, ks)
    for chunk in (7, 1024):
        result = retrieval_recall_at_k(images, texts, owners, ks, chunk_size=chunk)
        assert result.keys() == expected.keys()
        for key in expected:
            assert result[key] == pytest.approx(expected[key]), key
    assert 0 < expected["ir_r1"] < 100 and 0 < expected["tr_r1"] < 100


def test_recall_by_hand():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])  # the third text is image 1's but looks like 0
    result = retrieval_recall_at_k(images, texts, torch.tensor([0, 1, 1]), ks=(1,))
    assert result["ir_r1"] == pytest.approx(200 / 3)
    assert result["tr_r1"] == 100.0  # image 1's best caption (text 1) is its top text


def test_metric_uses_text_mask_and_is_exact_across_ranks(check_two_ranks):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(8, 6, generator=g)
    texts = images[:, None, :] + 0.8 * torch.randn(8, 3, 6, generator=g)
    mask = torch.ones(8, 3, dtype=torch.bool)
    mask[2, 2] = False
    mask[5, 1:] = False
    texts[2, 2] = 100 * images[0]  # padded captions must not count (they would be top hits)
    texts[5, 2] = 100 * images[1]
    batch = Batch(index=torch.arange(8), text_mask=mask)
    outputs = {"image_embeddings": images, "text_embeddings": texts}
    result = check_two_ranks(lambda: METRICS.build("retrieval_recall"), batch, outputs)
    real = texts[mask]
    owners = torch.arange(8)[:, None].expand(8, 3)[mask]
    expected = _brute_force(images, real, owners, (1, 5, 10))
    for key, value in expected.items():
        assert result[key] == pytest.approx(value)
