"""Stagewise pre-training: which parameters each stage trains (the rest get requires_grad=False)."""

from __future__ import annotations

from torch import nn


def _expert_parameters(model: nn.Module, expert: str) -> list[str]:
    return [name for name, _ in model.named_parameters() if f".experts.{expert}." in name]


def trainable_prefixes(model: nn.Module, stage: str) -> list[str] | None:
    """Name prefixes trained in `stage`; None = everything except the unused pre-training heads."""
    if stage == "vision":
        # image-only pass: patch embedding, shared attention/norms, V-FFN, MIM head
        shared = [name for name, _ in model.named_parameters()
                  if name.startswith("transformer.") and ".experts." not in name]
        return ["image_embeddings.", "mim_head."] + shared + _expert_parameters(model, "vision") + \
            _expert_parameters(model, "shared")
    if stage == "language":
        # the L-FFN (with its own norms), the text embeddings and the MLM head; attention,
        # the shared norms, LayerScale and the V-FFN stay frozen
        return ["text_embeddings.", "mlm_head."] + _expert_parameters(model, "language")
    return None


def apply_stage(model: nn.Module, stage: str) -> list[str]:
    """Set requires_grad for `stage`; returns the trainable parameter names."""
    prefixes = trainable_prefixes(model, stage)
    unused = ["mim_head."] if stage == "vision_language" else \
        ["mim_head.", "mlm_head.", "itm_head."] if stage == "finetune" else []
    trainable = []
    for name, parameter in model.named_parameters():
        if prefixes is None:
            keep = not any(name.startswith(p) for p in unused)
        else:
            keep = any(name.startswith(p) for p in prefixes)
        parameter.requires_grad_(keep)
        if keep:
            trainable.append(name)
    return trainable
