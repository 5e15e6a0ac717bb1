"""Named sizes and the model's default config (every key settable as model_config.fiber.<key>)."""

from __future__ import annotations

from typing import Any

from vlfw.errors import ConfigError
from vlfw.models.base import resolve_init_std as init_std_by_size

# image: torchvision SwinTransformer arguments; text: BertConfig sizes; fusion_layers: K, the top
# image blocks paired one-to-one (counting down from the top) with the top text layers
SIZES: dict[str, dict[str, Any]] = {
    # tests: 6 Swin blocks (1, 1, 2, 2) of widths 16..128, a 4 x 64 BERT; K=3 spans the stage 3 -> 4 boundary
    "tiny": {"patch_size": 4, "embed_dim": 16, "depths": [1, 1, 2, 2], "image_heads": [1, 2, 2, 4], "window_size": 4,
             "text_layers": 4, "text_hidden": 64, "text_heads": 4, "text_ffn": 128, "fusion_layers": 3},
    # Swin-T shapes + the bundled MiniLM BERT (6 x 384, 12 heads, FFN 1536); K=3: half the text layers
    # (the paper fuses 6 of RoBERTa's 12)
    "small": {"patch_size": 4, "embed_dim": 96, "depths": [2, 2, 6, 2], "image_heads": [3, 6, 12, 24], "window_size": 7,
              "text_layers": 6, "text_hidden": 384, "text_heads": 12, "text_ffn": 1536, "fusion_layers": 3},
    # the paper: Swin-B (2, 2, 18, 2) + a 12 x 768 text encoder, fusion in the top 6 (4 of stage 3, 2 of stage 4)
    "base": {"patch_size": 4, "embed_dim": 128, "depths": [2, 2, 18, 2], "image_heads": [4, 8, 16, 32], "window_size": 7,
             "text_layers": 12, "text_hidden": 768, "text_heads": 12, "text_ffn": 3072, "fusion_layers": 6},
    "large": {"patch_size": 4, "embed_dim": 192, "depths": [2, 2, 18, 2], "image_heads": [6, 12, 24, 48], "window_size": 7,
              "text_layers": 24, "text_hidden": 1024, "text_heads": 16, "text_ffn": 4096, "fusion_layers": 6},
}

# std of the random text backbone's init (BertConfig.initializer_range): BERT's 0.02, but the 64-wide
# tiny text encoder uses 1/sqrt(64): at 0.02 its first token hardly depends on the text at init (mean
# pairwise cosine 0.9999 over a Shapes batch, 0.90 at 0.125) and ITC from scratch sits at chance
INIT_STD: dict[str, float] = {"tiny": 0.125}

# text_init auto: the bundled MiniLM weights for `small` (the only size whose shape they fit), random otherwise
TEXT_INIT_AUTO = {"small": "bert"}

# model_config.fiber.grounding: the fine-grained head's settings (a dataset's
# `heads.<dataset>: {type: fiber_grounding, params: {grounding: {...}}}` replaces them for that dataset)
GROUNDING_DEFAULTS: dict[str, Any] = {
    "stages": [1, 2, 3],        # Swin stages fed to the FPN (0 = stride 4); [1, 2, 3] + P6/P7 = P3-P7, GLIP's layout
    "width": 256,               # FPN / tower width
    "num_convs": 4,             # conv layers per tower
    "p6p7": True,
    "embed_dim": None,          # null = width
    "assignment": "fcos",       # fcos | atss
    "scale_multiplier": 8.0,
    "center_sampling_radius": 1.5,
    "atss_top_k": 9,
    "anchor_scale": 8.0,
    "atss_ensure_positive": True,
    "focal_alpha": 0.25,
    "focal_gamma": 2.0,
    "loss_weights": {"token_focal": 1.0, "box_giou": 1.0, "centerness": 1.0},
    "nms_threshold": 0.6,
    "pre_nms_candidates": 1000,
    "predict_k": 10,            # boxes kept per phrase in evaluation (REC reads the first)
}

CONFIG_CHOICES = {"size": tuple(SIZES), "text_init": ("auto", "random", "bert"),
                  "grounding.assignment": ("fcos", "atss")}

DEFAULT_CONFIG: dict[str, Any] = {
    "size": "base",
    # null: take the value from `size`
    "patch_size": None,
    "embed_dim": None,
    "depths": None,
    "image_heads": None,
    "window_size": None,
    "text_layers": None,
    "text_hidden": None,
    "text_heads": None,
    "text_ffn": None,
    "fusion_layers": None,    # K; 0 = no cross-attention at all (two unimodal backbones)
    "fusion_gate_init": 0.0,  # every fusion_gate's start (the paper: 0, the backbones exactly unimodal)
    "vocab_size": None,       # null: the datasets' tokenizer (TaskInfo.text)
    "max_text_length": 64,    # text positions (captioning: at least the tokenizer's and generation's max_length)
    "dropout": 0.1,           # BERT hidden and attention dropout
    "drop_path_rate": 0.1,    # Swin stochastic depth (0 .. this, by block)
    "head_dropout": 0.1,      # the VQA / NLVR2 classifier heads
    # auto | random | bert: the text backbone from a BERT checkpoint (auto: bert for size small)
    "text_init": "auto",
    "init_std": None,         # random text init std; null = by size (0.02; tiny 0.125)
    "bert_path": None,        # folder with config.json + model.safetensors; null = the bundled MiniLM
    "itc_embedding_size": None,  # null = text_hidden
    "temperature_init": 0.07,  # ITC temperature, learned, kept in [0.001, 1]
    # retrieval evaluation: re-rank each query's dual-encoder top `rerank_k` by the ITM head
    # (0 = dual encoder only); applied by the evaluator's re-rank step (vlfw.runner.rerank)
    "retrieval": {"rerank_k": 0, "rerank_batch_size": 64},
    # the fine-grained stage (tasks dense_rec / dense_grounding, head fiber_grounding); see GROUNDING_DEFAULTS
    "grounding": GROUNDING_DEFAULTS,
    "heads": {},
}

ARCHITECTURE_KEYS = tuple(SIZES["tiny"])


def resolve_sizes(config: Any) -> dict[str, Any]:
    """The size preset with any explicitly set (non-null) architecture key applied, checked."""
    resolved = dict(SIZES[str(config.size)])
    for key in ARCHITECTURE_KEYS:
        value = config.get(key)
        if value is not None:
            resolved[key] = [int(v) for v in value] if isinstance(resolved[key], list) else int(value)
    stages = len(resolved["depths"])
    if len(resolved["image_heads"]) != stages:
        raise ConfigError(f"model_config.fiber: image_heads {resolved['image_heads']} must give one head count per "
                          f"stage of depths {resolved['depths']}")
    blocks = sum(resolved["depths"])
    k = resolved["fusion_layers"]
    if not 0 <= k <= min(blocks, resolved["text_layers"]):
        raise ConfigError(f"model_config.fiber.fusion_layers={k} must be in [0, {min(blocks, resolved['text_layers'])}] "
                          f"(the image has {blocks} Swin blocks, the text {resolved['text_layers']} layers)")
    if resolved["text_hidden"] % resolved["text_heads"]:
        raise ConfigError(f"model_config.fiber: text_hidden {resolved['text_hidden']} is not divisible by "
                          f"text_heads {resolved['text_heads']}")
    return resolved


def resolve_text_init(config: Any) -> str:
    value = str(config.text_init)
    return TEXT_INIT_AUTO.get(str(config.size), "random") if value == "auto" else value


def resolve_init_std(config: Any) -> float:
    """model_config.fiber.init_std, or the size's default when null (vlfw.models.base.resolve_init_std)."""
    return init_std_by_size(config, "fiber", INIT_STD)
