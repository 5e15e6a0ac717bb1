"""Every Shapes benchmark the baselines support goes builder -> collate -> model -> loss ->
metric, in both visual modes: the contract of docs/conventions.md holds end to end."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from vlfw.registry import LOSSES, METRICS, MODELS
from vlfw.testing import shapes_builder

CASES = [
    ("vqa2", "images"), ("vqa2", "regions"), ("nlvr2", "images"), ("nlvr2", "regions"),
    ("snli_ve", "images"), ("snli_ve", "regions"), ("refcoco", "images"), ("refcoco", "regions"),
    ("refcoco_plus", "regions"), ("refcocog", "regions"), ("vcr", "images"), ("vcr", "regions"),
    ("coco_retrieval", "images"), ("flickr30k_retrieval", "regions"), ("flickr30k_entities", "regions"),
]


def make_builder(name, visual):
    return shapes_builder(name, visual=visual,
                          processors={"image": {"params": {"size": 64}}} if visual == "images" else {},
                          features={"format": "butd_tsv"} if visual == "regions" else {})


@pytest.mark.parametrize("name, visual", CASES)
def test_builder_model_loss_metric(name, visual, shapes_tiny_root):
    builder = make_builder(name, visual)
    info = builder.task_info()
    model_config = OmegaConf.merge(MODELS.get("late_fusion").DEFAULT_CONFIG,
                                   {"hidden_size": 32, "text_layers": 1, "text_heads": 2, "cnn_channels": [8, 16]})
    model = MODELS.get("late_fusion")(model_config, {name: info})
    train = builder.build("train")
    batch = builder.collate([train[i] for i in range(min(4, len(train)))])
    if visual == "regions":  # the model sizes its region projection from task_info
        assert info.region_feature_size == batch.region_features.shape[-1]
    outputs = model(batch)
    for spec in builder.config.losses:
        loss = LOSSES.get(spec.type)(**spec.get("params", {}))(batch, outputs)
        assert loss.dim() == 0 and math.isfinite(loss.item())
        loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    model.eval()
    val = builder.build("val")
    with torch.no_grad():
        batch = builder.collate([val[i] for i in range(min(4, len(val)))])
        outputs = model(batch)
    for spec in builder.config.metrics:
        metric = METRICS.get(spec.type)(task_info=info, **spec.get("params", {}))
        metric.update(batch, outputs)
        values = metric.compute()
        assert values and all(math.isfinite(v) for v in values.values())
        if metric.primary:
            assert metric.primary in values
