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


def unused_prefixes(model: nn.Module, stage: str, fused: bool = True, dual: bool = True) -> list[str]:
    """What `stage` never runs (frozen, so DDP needs no find_unused_parameters).

    The [MASK] patch embedding belongs to masked image modelling. When fine-tuning, `fused=False`
    (retrieval only: the dual encoder) leaves the VL-FFN and the pooler unused; `dual=False` (no
    retrieval task) leaves the ITC projections, the temperature and the V-FFN / L-FFN of the
    VL-FFN blocks unused (the fused pass sends every token to the VL-FFN there)."""
    if stage == "vision_language":
        return ["mim_head.", "image_embeddings.mask_token"]
    if stage != "finetune":
        return []
    unused = ["mim_head.", "mlm_head.", "itm_head.", "image_embeddings.mask_token"]
    if not fused:
        unused += ["pooler."] + _expert_parameters(model, "vision_language")
    if not dual:
        unused += ["logit_scale", "itc_image_projection.", "itc_text_projection."]
        for index, block in enumerate(model.transformer.blocks):
            if block.has_vl_ffn and not block.shared_ffn:
                unused += [f"transformer.blocks.{index}.experts.{name}." for name in ("vision", "language")]
    return unused


def apply_stage(model: nn.Module, stage: str, fused: bool = True, dual: bool = True) -> list[str]:
    """Set requires_grad for `stage`; returns the trainable parameter names. `fused` / `dual`:
    some task runs the fused pass / the unimodal passes (see unused_prefixes)."""
    prefixes = trainable_prefixes(model, stage)
    unused = unused_prefixes(model, stage, fused, dual)
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
