"""The Shapes world's output (source: shapes, tiny) through every builder, like real files."""

from __future__ import annotations

import pytest
import torch

world = pytest.importorskip("vlfw.world")

NAMES = ["vqa2", "coco_retrieval", "coco_captioning", "flickr30k_retrieval", "flickr30k_captioning", "cc3m", "nlvr2",
         "snli_ve", "refcoco", "refcoco_plus", "refcocog", "vcr", "flickr30k_entities"]
FIELDS = {"vqa2": "targets", "nlvr2": "label", "snli_ve": "label", "refcoco": "region_targets", "refcoco_plus": "region_targets",
          "refcocog": "region_targets", "vcr": "answer_label", "flickr30k_entities": "region_targets",
          "coco_captioning": "references", "flickr30k_captioning": "references", "coco_retrieval": "image_id",
          "flickr30k_retrieval": "image_id", "cc3m": "mlm_labels"}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("visual,fmt", [("images", "butd_tsv"), ("regions", "butd_tsv"), ("regions", "npy")])
def test_shapes_world_loads(shapes_tiny_root, name, visual, fmt):
    from vlfw.registry import DATASETS

    builder = DATASETS.get(name)({"source": "shapes", "visual": visual, "features": {"format": fmt},
                                  "processors": {"image": {"params": {"size": 32}}}}, name)
    info = builder.task_info()
    assert info.task and (info.detector_classes is not None) == (fmt == "npy")
    if info.detector_classes is not None:  # the world's classes.json names them
        assert len(info.detector_class_names) == info.detector_classes
    for split in ("train", "val"):
        dataset = builder.build(split)
        assert len(dataset) > 0
        samples = [dataset[i] for i in range(min(3, len(dataset)))]
        batch = builder.collate(samples)
        assert FIELDS[name] in batch
        if visual == "images":
            assert batch.image.shape[-3:] == (3, 32, 32)
        else:
            assert batch.region_features.dim() >= 3 and torch.isfinite(batch.region_features).all()
            assert batch.region_mask.any()
    if name == "vqa2":
        sample = builder.build("train")[0]
        assert sample.targets.max() > 0  # training questions have an in-vocabulary answer
    if name.startswith("ref") or name == "flickr30k_entities":
        assert any(builder.build("train")[i].region_targets.sum() > 0 for i in range(3))
