"""The core's own components: the one module that imports every core module that registers
something. The `vlfw` entry point names it, so the core registers its built-ins through the same
plugin mechanism as every third-party package (and with the same provenance)."""

import importlib

REGISTERING_MODULES = [
    # processors
    "vlfw.processors.anchors", "vlfw.processors.answers", "vlfw.processors.image", "vlfw.processors.masking",
    "vlfw.processors.text",
    # dataset builders
    "vlfw.datasets.captions", "vlfw.datasets.cc3m", "vlfw.datasets.flickr30k_entities", "vlfw.datasets.image_text_shards",
    "vlfw.datasets.nlvr2",
    "vlfw.datasets.refcoco", "vlfw.datasets.snli_ve", "vlfw.datasets.vcr", "vlfw.datasets.vqa2",
    # tasks, heads, encoders, models
    "vlfw.tasks", "vlfw.modules.heads", "vlfw.modules.encoders", "vlfw.models.baselines", "vlfw.models.attention",
    "vlfw.models.captioning",
    # losses and metrics
    "vlfw.losses.contrastive", "vlfw.losses.standard",
    "vlfw.metrics.captioning", "vlfw.metrics.classification", "vlfw.metrics.grounding", "vlfw.metrics.rec",
    "vlfw.metrics.retrieval", "vlfw.metrics.vcr", "vlfw.metrics.vqa",
    # the runner's: hooks (CALLBACKS), optimizers, schedulers, multi-task iteration strategies
    "vlfw.runner.hooks", "vlfw.runner.optim", "vlfw.runner.schedulers", "vlfw.data.multitask",
]

for _name in REGISTERING_MODULES:
    importlib.import_module(_name)
