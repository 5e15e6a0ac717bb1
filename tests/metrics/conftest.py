import pytest

from vlfw.data.batch import Batch


@pytest.fixture
def check_two_ranks():
    def check(make_metric, batch: Batch, outputs: dict):
        import torch

        n = batch.batch_size
        half = n // 2
        single = make_metric()
        single.update(batch, outputs)
        expected = single.compute()

        def part(rows):
            index = torch.tensor(rows)
            sub_outputs = {k: v[index] for k, v in outputs.items()}
            return batch.select(rows), sub_outputs

        first, second = make_metric(), make_metric()
        first.update(*part(list(range(half))))
        second.update(*part(list(range(half, n)) + [0]))
        merged = make_metric()
        records = {}
        for rank in (first, second):
            records.update(rank._records)
        merged._records = records
        assert merged.compute() == expected
        return expected

    return check
