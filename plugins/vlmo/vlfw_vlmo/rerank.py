"""Optional ITM re-ranking of the dual encoder's top-k candidates (the fusion encoder as a scorer)."""

from __future__ import annotations

import torch


@torch.no_grad()
def itm_scores(model, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               image_index: torch.Tensor, text_index: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """ITM match score (logit of 'match' minus 'no match') of each (image_index[i], text_index[i])."""
    scores = []
    for start in range(0, len(image_index), batch_size):
        i = image_index[start:start + batch_size]
        t = text_index[start:start + batch_size]
        mask = None if attention_mask is None else attention_mask[t]
        logits = model.itm_logits(images[i], input_ids[t], mask).float()
        scores.append(logits[:, 1] - logits[:, 0])
    return torch.cat(scores) if scores else torch.empty(0)


@torch.no_grad()
def itm_rerank(model, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, k: int = 16,
               batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank with the dual encoder, then reorder each query's top k by the ITM head.

    images (I, 3, H, W), input_ids (T, L), embeddings (I, D) / (T, D). Returns
    (text->image ranking (T, k) image indices, image->text ranking (I, k) text indices), best first.
    Cost: (T + I) * k fused passes instead of T * I.
    """
    similarity = text_embeddings.float() @ image_embeddings.float().t()  # (T, I)
    k_images = min(k, similarity.shape[1])
    k_texts = min(k, similarity.shape[0])
    candidates = similarity.topk(k_images, dim=1).indices                      # (T, k)
    texts = torch.arange(len(similarity))[:, None].expand_as(candidates)
    score = itm_scores(model, images, input_ids, attention_mask, candidates.reshape(-1), texts.reshape(-1),
                       batch_size).view_as(candidates)
    text_to_image = candidates.gather(1, score.argsort(dim=1, descending=True))
    candidates = similarity.t().topk(k_texts, dim=1).indices                  # (I, k)
    owners = torch.arange(similarity.shape[1])[:, None].expand_as(candidates)
    score = itm_scores(model, images, input_ids, attention_mask, owners.reshape(-1), candidates.reshape(-1),
                       batch_size).view_as(candidates)
    image_to_text = candidates.gather(1, score.argsort(dim=1, descending=True))
    return text_to_image, image_to_text
