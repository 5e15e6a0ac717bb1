"""Tiny VLMo models and batches shared by the tests."""

import torch

from vlfw.data.batch import Batch
from vlfw_vlmo.model import VLMo

TASKS = {
    "cc3m": {"task": "pretraining", "mask_id": 103},
    "vqa2": {"task": "vqa", "num_answers": 7},
    "nlvr2": {"task": "nlvr2", "num_labels": 2},
    "coco_retrieval": {"task": "retrieval"},
}


def make_model(**overrides) -> VLMo:
    torch.manual_seed(0)
    config = {"size": "tiny", "drop_path_rate": 0.0, **overrides}
    return VLMo(config, TASKS).eval()


def make_batch(dataset: str, batch: int = 3, length: int = 7, image_size: int = 32, **fields) -> Batch:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 3000, (batch, length), generator=generator)
    ids[:, 0] = 101
    ids[:, -1] = 102
    out = Batch(image=torch.randn(batch, 3, image_size, image_size, generator=generator), input_ids=ids,
                attention_mask=torch.ones(batch, length, dtype=torch.long))
    out.update(fields)
    out.dataset_name = dataset
    return out
