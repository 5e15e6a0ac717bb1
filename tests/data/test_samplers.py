import torch

from vlfw.data.samplers import ResumableDistributedSampler, ShardedEvalSampler


def test_permutation_depends_on_seed_and_epoch_only():
    a = ResumableDistributedSampler(20, seed=1)
    b = ResumableDistributedSampler(20, seed=1)
    assert list(a) == list(b) and sorted(a) == list(range(20))
    b.set_epoch(1)
    assert list(a) != list(b)
    assert list(ResumableDistributedSampler(20, seed=2)) != list(a)


def test_shards_cover_the_dataset_with_padding():
    shards = [list(ResumableDistributedSampler(10, num_replicas=3, rank=r, seed=0)) for r in range(3)]
    assert all(len(s) == 4 for s in shards)
    flat = [i for s in shards for i in s]
    assert set(flat) == set(range(10)) and len(flat) == 12


def test_resume_mid_epoch_gives_the_same_next_samples():
    sampler = ResumableDistributedSampler(17, num_replicas=2, rank=1, seed=5)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.advance(4)
    state = sampler.state_dict()
    restored = ResumableDistributedSampler(17, num_replicas=2, rank=1, seed=5)
    restored.load_state_dict(state)
    assert list(restored) == full[4:]
    assert restored.epoch == 3 and len(restored) == len(full) - 4


def test_eval_sampler_marks_padding():
    samplers = [ShardedEvalSampler(7, 3, r) for r in range(3)]
    assert [s.num_real for s in samplers] == [3, 2, 2]
    real = sorted(i for s in samplers for i in s.indices[: s.num_real])
    assert real == list(range(7))
    assert all(len(s) == 3 for s in samplers)


def test_stream_counts_consumed_not_prefetched():
    from vlfw.data.multitask import DatasetStream

    data = [{"x": torch.tensor(float(i)), "index": i} for i in range(12)]
    collate = lambda samples: torch.stack([s["x"] for s in samples])  # noqa: E731
    stream = DatasetStream("d", data, collate, micro_batch_size=4, seed=0, num_workers=2)
    first = stream.next()
    state = stream.state_dict()
    assert state["consumed"] == 4
    expected = [stream.next() for _ in range(4)]  # crosses into epoch 1
    other = DatasetStream("d", data, collate, micro_batch_size=4, seed=0, num_workers=0)
    other.load_state_dict(state)
    assert all(torch.equal(a, other.next()) for a in expected)
    assert other.sampler.epoch == 1 and first.shape == (4,)
