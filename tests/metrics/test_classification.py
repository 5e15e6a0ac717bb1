import pytest
import torch

from vlfw.data.batch import Batch
from vlfw.metrics.classification import nlvr2_sentence_key
from vlfw.registry import METRICS


def test_accuracy(check_two_ranks):
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0, 3.0, 0]])
    batch = Batch(index=torch.arange(5), label=torch.tensor([0, 1, 0, 0, 2]))
    result = check_two_ranks(lambda: METRICS.build("accuracy"), batch, {"logits": logits})
    assert result == {"accuracy": pytest.approx(60.0)}


def test_nlvr2_accuracy_and_consistency(check_two_ranks):
    ids = ["dev-1-0-0", "dev-1-1-0", "dev-1-2-0", "dev-1-0-1", "dev-1-1-1", "dev-2-0-0"]
    labels = torch.tensor([1, 0, 1, 1, 1, 0])
    predicted = torch.tensor([1, 0, 1, 0, 1, 0])  # sentence dev-1-*-1 has one mistake
    logits = torch.nn.functional.one_hot(predicted, 2).float()
    batch = Batch(index=torch.arange(6), id=ids, label=labels)
    result = check_two_ranks(lambda: METRICS.build("nlvr2"), batch, {"logits": logits})
    assert result["accuracy"] == pytest.approx(100 * 5 / 6)
    assert result["consistency"] == pytest.approx(100 * 2 / 3)
    assert nlvr2_sentence_key("test1-123-4-2") == "test1-123-2"
