"""Named sizes and the model's default config (every key settable as model_config.vlmo.<key>)."""

from __future__ import annotations

from typing import Any

from vlfw.models.base import resolve_init_std as init_std_by_size

# layers, hidden, heads, FFN width, number of top layers with a VL-FFN, image size, patch size
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"num_layers": 4, "hidden_size": 64, "num_heads": 4, "ffn_size": 256, "vl_ffn_layers": 1,
             "image_size": 32, "patch_size": 8},
    # the shape of the bundled MiniLM BERT (6 x 384, 12 heads, FFN 1536): `init: bert` loads it
    "small": {"num_layers": 6, "hidden_size": 384, "num_heads": 12, "ffn_size": 1536, "vl_ffn_layers": 2,
              "image_size": 224, "patch_size": 16},
    "base": {"num_layers": 12, "hidden_size": 768, "num_heads": 12, "ffn_size": 3072, "vl_ffn_layers": 2,
             "image_size": 224, "patch_size": 16},
    "large": {"num_layers": 24, "hidden_size": 1024, "num_heads": 16, "ffn_size": 4096, "vl_ffn_layers": 3,
              "image_size": 224, "patch_size": 16},
}

# std of the truncated-normal init of every Linear layer: 0.02 as BEiT / VLMo for the paper's
# sizes; the 64-wide tiny model uses 1/sqrt(64) (fan-in scaled), because at 0.02 its [T_CLS] /
# [I_CLS] hardly depend on the input at init and training from scratch sits on a plateau
# (plugins/vlmo/README.md, "Training the tiny model from scratch")
INIT_STD: dict[str, float] = {"tiny": 0.125}

STAGES = ("vision", "language", "vision_language", "finetune")

# allowed values, checked when the config is loaded
CONFIG_CHOICES = {"size": tuple(SIZES), "stage": STAGES, "init": (None, "bert")}

DEFAULT_CONFIG: dict[str, Any] = {
    "size": "base",
    # null: take the value from `size`
    "num_layers": None,
    "hidden_size": None,
    "num_heads": None,
    "ffn_size": None,
    "vl_ffn_layers": None,   # top layers whose fused pass uses the VL-FFN; 0 = no VL-FFN at all
    "image_size": None,      # pretraining image size (position table); other sizes interpolate it
    "patch_size": None,
    "shared_ffn": False,     # ablation: one FFN shared by all modalities instead of the experts
    "vocab_size": None,      # null: the datasets' tokenizer (TaskInfo.text)
    "max_text_length": 40,
    "dropout": 0.0,
    "drop_path_rate": 0.1,
    "layer_scale_init": 0.1,
    "init_std": None,        # Linear init std; null = by size (0.02; tiny 0.125)
    "layer_norm_eps": 1.0e-6,
    # pre-training stage: vision | language | vision_language | finetune (finetune freezes nothing)
    "stage": "vision_language",
    # null | bert: initialise attention, the L-FFN and the text embeddings from a BERT checkpoint
    "init": None,
    "bert_path": None,       # folder with config.json + model.safetensors; null = the bundled MiniLM
    "itc_embedding_size": None,  # null = hidden_size
    "logit_scale_init": 2.6592600369327779,  # log(1 / 0.07)
    "mim_mask_ratio": 0.4,
    # retrieval evaluation: re-rank each query's dual-encoder top `rerank_k` by the ITM head
    # (0 = dual encoder only); applied by the evaluator's re-rank step (vlfw.runner.rerank)
    "retrieval": {"rerank_k": 0, "rerank_batch_size": 64},
    "heads": {},
}


def resolve_init_std(config: Any) -> float:
    """model_config.vlmo.init_std, or the size's default when null (vlfw.models.base.resolve_init_std)."""
    return init_std_by_size(config, "vlmo", INIT_STD)


def resolve_sizes(config: Any) -> dict[str, int]:
    """The size preset with any explicitly set (non-null) architecture key applied."""
    resolved = dict(SIZES[str(config.size)])
    for key in resolved:
        value = config.get(key)
        if value is not None:
            resolved[key] = int(value)
    if resolved["vl_ffn_layers"] > resolved["num_layers"]:
        from vlfw.errors import ConfigError

        raise ConfigError(f"model_config.vlmo.vl_ffn_layers={resolved['vl_ffn_layers']} exceeds "
                          f"num_layers={resolved['num_layers']}")
    return resolved
