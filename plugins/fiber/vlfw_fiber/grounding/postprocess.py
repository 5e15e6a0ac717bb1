"""From dense outputs to ranked boxes per phrase: score, decode, clip, NMS, top-k."""

from __future__ import annotations

from typing import Sequence

import torch
from torchvision.ops import nms

from vlfw.processors.boxes import clip_boxes

from .losses import decode_distances


def phrase_scores(token_logits: torch.Tensor, centerness_logits: torch.Tensor, phrase_tokens: torch.Tensor) -> torch.Tensor:
    """Score of each location for each phrase: mean over the phrase's tokens of the token
    sigmoid probability, times sigmoid(centerness). token_logits [L, T], centerness_logits [L],
    phrase_tokens [P, T] bool -> [P, L]."""
    phrase_tokens = phrase_tokens.bool()
    if phrase_tokens.dim() != 2 or phrase_tokens.shape[1] != token_logits.shape[1]:
        raise ValueError(f"phrase token masks must be [P, {token_logits.shape[1]}], got {tuple(phrase_tokens.shape)}")
    counts = phrase_tokens.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("a phrase has no token: every row of the phrase masks needs one True")
    probabilities = token_logits.float().sigmoid()  # [L, T]
    mean = phrase_tokens.float() @ probabilities.T / counts[:, None]  # [P, L]
    return mean * centerness_logits.float().sigmoid()[None, :]


def rank_boxes(boxes: torch.Tensor, scores: torch.Tensor, k: int, nms_threshold: float | None = 0.6,
               candidates: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Top `candidates` by score, NMS at `nms_threshold` (None: no NMS), then the best k.
    boxes [L, 4], scores [L] -> (boxes [k', 4], scores [k']) with k' <= k, best first."""
    top = scores.topk(min(candidates, scores.numel())).indices
    boxes, scores = boxes[top], scores[top]
    if nms_threshold is not None:
        keep = nms(boxes, scores, nms_threshold)
        boxes, scores = boxes[keep], scores[keep]
    return boxes[:k], scores[:k]


def predict_phrase_boxes(outputs: dict[str, torch.Tensor], phrases: Sequence[torch.Tensor],
                         image_sizes: torch.Tensor | Sequence[Sequence[float]], k: int = 10,
                         nms_threshold: float | None = 0.6, candidates: int = 1000) -> list[dict[str, torch.Tensor]]:
    """Per image b: phrases[b] [P_b, T] bool token masks; image_sizes [B, 2] as (width, height) of
    the image tensor the boxes live in. Returns per image {"boxes" [P_b, k, 4] xyxy clipped to the
    image, "scores" [P_b, k], "valid" [P_b, k] bool}; rows past what NMS kept are padding (valid
    False, score -inf, box zeros). REC: one phrase (the whole expression), take boxes[:, 0]."""
    token_logits = outputs["token_logits"].detach()
    centerness_logits = outputs["centerness_logits"].detach()
    decoded = decode_distances(outputs["locations"], outputs["box_distances"].detach().float())
    sizes = torch.as_tensor(image_sizes, dtype=torch.float32).reshape(-1, 2).tolist()
    if len(phrases) != token_logits.shape[0] or len(sizes) != token_logits.shape[0]:
        raise ValueError(f"predict_phrase_boxes: {token_logits.shape[0]} images, {len(phrases)} phrase lists, "
                         f"{len(sizes)} image sizes")
    results = []
    for b, (masks, (width, height)) in enumerate(zip(phrases, sizes)):
        masks = torch.as_tensor(masks, device=token_logits.device).bool().reshape(-1, token_logits.shape[-1])
        boxes = clip_boxes(decoded[b], width, height)
        scores = phrase_scores(token_logits[b], centerness_logits[b], masks)
        out_boxes = boxes.new_zeros(masks.shape[0], k, 4)
        out_scores = scores.new_full((masks.shape[0], k), float("-inf"))
        valid = torch.zeros(masks.shape[0], k, dtype=torch.bool, device=boxes.device)
        for p in range(masks.shape[0]):
            kept_boxes, kept_scores = rank_boxes(boxes, scores[p], k, nms_threshold, candidates)
            n = kept_boxes.shape[0]
            out_boxes[p, :n], out_scores[p, :n], valid[p, :n] = kept_boxes, kept_scores, True
        results.append({"boxes": out_boxes, "scores": out_scores, "valid": valid})
    return results


def single_phrase_outputs(results: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """`predict_phrase_boxes` results with ONE phrase per image (REC; Flickr30k Entities as vlfw
    samples it, one phrase per sample) -> model outputs {"pred_boxes" [B, k, 4], "pred_scores"
    [B, k], "pred_valid" [B, k]}, what PredictedBoxRECAccuracy / PredictedBoxGroundingRecall read."""
    if any(r["boxes"].shape[0] != 1 for r in results):
        raise ValueError(f"single_phrase_outputs: expected one phrase per image, got {[r['boxes'].shape[0] for r in results]}")
    return {"pred_boxes": torch.cat([r["boxes"] for r in results]), "pred_scores": torch.cat([r["scores"] for r in results]),
            "pred_valid": torch.cat([r["valid"] for r in results])}
