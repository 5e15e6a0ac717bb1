import pytest
import torch

from vlfw.data.batch import Batch, Sample, collate, pad_stack


def test_collate_pads_and_masks_text_and_regions():
    samples = [
        Sample(index=0, input_ids=torch.tensor([101, 5, 102]), mlm_labels=torch.tensor([-100, 5, -100]),
               region_features=torch.ones(2, 4), id="a"),
        Sample(index=1, input_ids=torch.tensor([101, 6, 7, 8, 102]), mlm_labels=torch.tensor([-100, 6, -100, -100, -100]),
               region_features=torch.ones(3, 4) * 2, id="b"),
    ]
    batch = collate(samples, "vqa2")
    assert batch.dataset_name == "vqa2"
    assert batch.input_ids.tolist() == [[101, 5, 102, 0, 0], [101, 6, 7, 8, 102]]
    assert batch.attention_mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert batch.mlm_labels[0, 3:].tolist() == [-100, -100]  # labels pad with the ignore index
    assert batch.region_features.shape == (2, 3, 4)
    assert batch.region_mask.tolist() == [[True, True, False], [True, True, True]]
    assert batch.id == ["a", "b"] and batch.index == [0, 1]
    assert batch.batch_size == 2


def test_collate_pads_every_dimension():
    a = torch.ones(2, 3, dtype=torch.long)
    b = torch.ones(4, 1, dtype=torch.long)
    padded = pad_stack([a, b])
    assert padded.shape == (2, 4, 3)
    assert padded[0, 2:].sum() == 0 and padded[1, :, 1:].sum() == 0
    mask = collate([Sample(input_ids=a), Sample(input_ids=b)]).attention_mask
    assert mask.shape == (2, 4, 3) and mask.sum() == 10


def test_collate_pad_values_by_name_and_pattern():
    """A tokenizer whose pad id is 1 (RoBERTa): every *input_ids field pads with it; the masks
    still come from the lengths, so a real token with id 1 is not taken for padding."""
    samples = [Sample(input_ids=torch.tensor([0, 1, 2]), answer_input_ids=torch.tensor([[0, 2]]),
                      token_type_ids=torch.zeros(3, dtype=torch.long), mlm_labels=torch.tensor([-100, 7, -100])),
               Sample(input_ids=torch.tensor([0, 9, 9, 2]), answer_input_ids=torch.tensor([[0, 9, 2], [0, 2, 2]]),
                      token_type_ids=torch.zeros(4, dtype=torch.long), mlm_labels=torch.tensor([-100, 9, -100, -100]))]
    batch = collate(samples, "x", pad_values={"*input_ids": 1})
    assert batch.input_ids.tolist() == [[0, 1, 2, 1], [0, 9, 9, 2]]
    assert batch.attention_mask.tolist() == [[True, True, True, False], [True] * 4]
    assert batch.answer_input_ids[0].tolist() == [[0, 2, 1], [1, 1, 1]]
    assert batch.answer_attention_mask[0].tolist() == [[True, True, False], [False] * 3]
    assert batch.token_type_ids[0, 3].item() == 0 and batch.mlm_labels[0, 3].item() == -100
    # an exact name wins over a pattern; other fields keep their defaults
    exact = collate(samples, pad_values={"*input_ids": 1, "answer_input_ids": 5})
    assert exact.answer_input_ids[0, 1].tolist() == [5, 5, 5] and exact.input_ids[0, 3].item() == 1
    assert collate(samples).input_ids[0, 3].item() == 0


def test_collate_rejects_mismatched_fields_and_ranks():
    with pytest.raises(ValueError, match="different fields"):
        collate([Sample(a=torch.ones(1)), Sample(b=torch.ones(1))])
    with pytest.raises(ValueError, match="different rank"):
        collate([Sample(a=torch.ones(1)), Sample(a=torch.ones(1, 1))])


def test_batch_to_select_and_attribute_errors():
    batch = collate([Sample(index=i, x=torch.tensor([i])) for i in range(4)], "d")
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and moved.dataset_name == "d"
    sub = batch.select([1, 3])
    assert sub.x.flatten().tolist() == [1, 3] and sub.index == [1, 3]
    with pytest.raises(AttributeError, match="no field 'nope'"):
        batch.nope
