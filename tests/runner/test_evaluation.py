"""The evaluator drives the metrics (reset, update, compute: they never see the model) and runs
the retrieval re-rank step with the unwrapped model on pairs it loads back from the dataset, alone
and across 2 gloo ranks with a DDP-wrapped model; the metric's records hold embeddings only."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from vlfw.data.batch import Sample
from vlfw.datasets.base import DatasetBuilder
from vlfw.metrics.base import Metric
from vlfw.metrics.retrieval import RetrievalRecall, recall_from_ranks
from vlfw.runner.distributed import DistributedContext
from vlfw.runner.evaluation import Evaluator
from vlfw.tasks import TaskInfo
from vlfw.testing import free_port

IMAGES, CAPTIONS, DIM, WORLD = 7, 2, 4, 2


class RetrievalToy(torch.utils.data.Dataset):
    """Image i: pixels all i; captions of slot s = i * CAPTIONS + c: ids [s + 1, 9, ...] of varying length."""

    def __len__(self):
        return IMAGES

    def __getitem__(self, index):
        length = 3 + index % 3
        ids = torch.full((CAPTIONS, length), 9)
        ids[:, 0] = index * CAPTIONS + torch.arange(CAPTIONS) + 1
        return Sample(index=index, image=torch.full((3, 2, 2), float(index)), input_ids=ids,
                      text_mask=torch.tensor([True, index != 5]))


class RetrievalToyBuilder(DatasetBuilder):
    def build(self, split):
        return RetrievalToy()

    def task_info(self):
        return TaskInfo(task="retrieval", dataset=self.name)


class ToyPairModel(nn.Module):
    """Fixed embeddings per image / caption slot; pair scores from a fixed table (PairScoringModel)."""

    def __init__(self, k: int):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.images = nn.Parameter(torch.randn(IMAGES, DIM, generator=g))
        self.register_buffer("texts", self.images.detach().repeat_interleave(CAPTIONS, 0)
                             + 1.2 * torch.randn(IMAGES * CAPTIONS, DIM, generator=g))
        self.register_buffer("table", torch.randn(IMAGES * CAPTIONS, IMAGES, generator=g))
        self.k = k
        self.scored = 0  # pairs given to score_pairs

    def forward(self, batch):
        image = batch.image[:, 0, 0, 0].round().long()
        slot = (batch.input_ids[:, :, 0] - 1).clamp(min=0)
        return {"image_embeddings": self.images[image], "text_embeddings": self.texts[slot]}

    def retrieval_rerank_k(self):
        return self.k

    def retrieval_rerank_batch_size(self):
        return 5

    def score_pairs(self, batch):
        assert batch.input_ids.dim() == 2 and batch.image.dim() == 4  # one (image, caption) pair per row
        self.scored += len(batch.image)
        return self.table[batch.input_ids[:, 0] - 1, batch.image[:, 0, 0, 0].round().long()]


class CallRecorder(Metric):
    """Records the order of the evaluator's calls."""

    def __init__(self, **params):
        self.events = []
        super().__init__(**params)

    def reset(self):
        super().reset()
        self.events.append("reset")

    def update(self, batch, outputs):
        self.events.append("update")
        for index in batch.index:
            self.add(int(index), 1.0)

    def summarize(self, records):
        return {"count": float(len(records))}


def make_evaluator(context, metrics):
    return Evaluator({"toy": RetrievalToyBuilder({}, "toy")}, {"toy": metrics}, context, batch_size=4,
                     progress_bar=False)


def brute_force_expected(model):
    """Recall when the pair table orders every candidate (k covers them all)."""
    mask = torch.ones(IMAGES, CAPTIONS, dtype=torch.bool)
    mask[5, 1] = False
    slots = torch.arange(IMAGES * CAPTIONS).view(IMAGES, CAPTIONS)[mask]
    owners = torch.arange(IMAGES)[:, None].expand(IMAGES, CAPTIONS)[mask]
    scores = model.table[slots]
    text_ranks = (scores > scores.gather(1, owners[:, None])).sum(dim=1)
    image_ranks = torch.tensor([int((scores[:, i] > scores[owners == i, i].max()).sum()) for i in range(IMAGES)])
    return {f"val/toy/{k}": v for k, v in recall_from_ranks(text_ranks, image_ranks, (1, 2)).items()}


def test_evaluator_resets_and_updates_the_metrics_of_each_pass():
    model = ToyPairModel(k=0)
    recorder = CallRecorder()
    evaluator = make_evaluator(DistributedContext(), [recorder])
    for _ in range(2):
        assert evaluator.evaluate(model, "val") == {"val/toy/count": float(IMAGES)}
    one_pass = ["reset"] + ["update"] * -(-IMAGES // 4)
    assert recorder.events == ["reset"] + one_pass * 2  # the constructor's reset, then each pass


def test_rerank_step_calls_the_unwrapped_model():
    model = ToyPairModel(k=3)

    class Wrapper(nn.Module):  # what torch.compile's OptimizedModule looks like to unwrap
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

        def forward(self, batch):
            return self._orig_mod(batch)

    got = make_evaluator(DistributedContext(), [RetrievalRecall(ks=(1, 2))]).evaluate(Wrapper(model), "val")
    assert got["val/toy/rerank_k"] == 3.0 and model.scored > 0


def test_retrieval_records_hold_embeddings_only():
    metric = RetrievalRecall(ks=(1, 2))
    make_evaluator(DistributedContext(), [metric]).evaluate(ToyPairModel(k=3), "val")
    for record in metric.records():
        assert set(record) == {"image_embedding", "text_embeddings", "slots"}
        assert record["image_embedding"].shape == (DIM,) and record["text_embeddings"].shape[-1] == DIM


def test_retrieval_recall_reranks_through_the_evaluator():
    reranking, plain = ToyPairModel(k=IMAGES * CAPTIONS), ToyPairModel(k=0)
    got = make_evaluator(DistributedContext(), [RetrievalRecall(ks=(1, 2))]).evaluate(reranking, "val")
    assert got.pop("val/toy/rerank_k") == float(IMAGES * CAPTIONS)
    expected = brute_force_expected(reranking)
    assert got.keys() == expected.keys()
    assert all(abs(got[key] - expected[key]) < 1e-9 for key in expected)
    dual = make_evaluator(DistributedContext(), [RetrievalRecall(ks=(1, 2))]).evaluate(plain, "val")
    assert "val/toy/rerank_k" not in dual and dual != got  # k = 0: the dual encoder's recall


def worker(rank, port, k, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        model = ToyPairModel(k=k)
        wrapped = nn.parallel.DistributedDataParallel(model)
        recorder = CallRecorder()
        context = DistributedContext(rank=rank, world_size=WORLD)
        values = make_evaluator(context, [RetrievalRecall(ks=(1, 2)), recorder]).evaluate(wrapped, "val")
        results[rank] = {"values": values, "scored": model.scored}
    finally:
        dist.destroy_process_group()


def test_two_ranks_with_ddp_equal_one_process():
    k = 3
    alone = ToyPairModel(k=k)
    single = make_evaluator(DistributedContext(), [RetrievalRecall(ks=(1, 2))]).evaluate(alone, "val")
    assert single["val/toy/rerank_k"] == float(k)
    results = mp.Manager().dict()
    mp.spawn(worker, args=(free_port(), k, results), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        got = dict(results[rank]["values"])
        assert got.pop("val/toy/count") == float(IMAGES)  # records gathered, padding dropped
        assert got == single
    # the ranks split the re-rank: each scores its share of the queries' pairs, none twice
    shares = [results[rank]["scored"] for rank in range(WORLD)]
    assert sum(shares) == alone.scored and all(0 < share < alone.scored for share in shares)
