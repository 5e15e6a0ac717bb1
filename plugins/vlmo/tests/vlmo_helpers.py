"""Tiny VLMo models and batches shared by the tests."""

import torch

from vlfw.data.batch import Batch
from vlfw.testing import task_info
from vlfw_vlmo.model import VLMo

TASKS = {
    "cc3m": task_info("pretraining", "cc3m", visual="images"),
    "vqa2": task_info("vqa", "vqa2", visual="images", num_answers=7),
    "nlvr2": task_info("nlvr2", "nlvr2", visual="images", num_labels=2, num_images=2),
    "coco_retrieval": task_info("retrieval", "coco_retrieval", visual="images"),
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
