"""Tiny FIBER models and batches shared by the tests."""

import torch

from vlfw.data.batch import Batch
from vlfw.testing import task_info
from vlfw_fiber.model import FIBER

TASKS = {
    "cc3m": task_info("pretraining", "cc3m", visual="images"),
    "vqa2": task_info("vqa", "vqa2", visual="images", num_answers=7),
    "nlvr2": task_info("nlvr2", "nlvr2", visual="images", num_labels=2, num_images=2),
    "coco_retrieval": task_info("retrieval", "coco_retrieval", visual="images"),
    "coco_captioning": task_info("captioning", "coco_captioning", visual="images"),
}


def make_model(tasks=None, **overrides) -> FIBER:
    torch.manual_seed(0)
    config = {"size": "tiny", "drop_path_rate": 0.0, "dropout": 0.0, **overrides}
    return FIBER(config, TASKS if tasks is None else {name: TASKS[name] for name in tasks}).eval()


def set_gates(model: FIBER, value: float) -> None:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("fusion_gate"):
                parameter.fill_(value)


def make_batch(dataset: str, batch: int = 3, length: int = 7, image_size: int = 32, pad_last: bool = True,
               **fields) -> Batch:
    """Random images and ids ([CLS] ... [SEP]); with pad_last the last row ends in two pads."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 3000, (batch, length), generator=generator)
    ids[:, 0] = 101
    ids[:, -1] = 102
    mask = torch.ones(batch, length, dtype=torch.long)
    if pad_last:
        ids[-1, -3:] = torch.tensor([102, 0, 0])
        mask[-1, -2:] = 0
    shape = (batch, 2, 3, image_size, image_size) if dataset == "nlvr2" else (batch, 3, image_size, image_size)
    out = Batch(image=torch.randn(*shape, generator=generator), input_ids=ids, attention_mask=mask)
    out.update(fields)
    out.dataset_name = dataset
    return out
