"""VLMo: one MoME Transformer run three ways (image-only, text-only, fused) for every task."""

from __future__ import annotations

import functools
import logging
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from vlfw.data.batch import Batch
from vlfw.errors import ConfigError
from vlfw.losses.contrastive import image_text_contrastive, itm_pairs
from vlfw.models.base import BaseModel, provides
from vlfw.registry import MODELS
from vlfw.tasks import TaskInfo, text_settings
from vlfw_vlmo import objectives
from vlfw_vlmo.config import CONFIG_CHOICES, DEFAULT_CONFIG, resolve_init_std, resolve_sizes
from vlfw_vlmo.embeddings import ImageEmbeddings, TextEmbeddings
from vlfw_vlmo.mome import MoMETransformer
from vlfw_vlmo.stages import apply_stage

log = logging.getLogger(__name__)

def _init_weights(module: nn.Module, std: float = 0.02) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@MODELS.register("vlmo")
class VLMo(BaseModel):
    """MoME Transformer with ITC / ITM / MLM (and MIM for the vision stage) and task heads."""

    DEFAULT_CONFIG = DEFAULT_CONFIG
    CONFIG_CHOICES = CONFIG_CHOICES
    TASK_HEADS = {"retrieval": "vlmo_embedding"}
    VISUAL_INPUTS = ("images",)
    CARD_CONFIG = {"init": None}

    def __init__(self, config, task_infos: Mapping[str, TaskInfo]) -> None:
        super().__init__(config, task_infos)
        c = self.config
        self.sizes = sizes = resolve_sizes(c)
        hidden, eps = sizes["hidden_size"], float(c.layer_norm_eps)
        self.hidden_size = hidden
        self.patch_size = sizes["patch_size"]
        vocab_size, self.pad_id = text_settings(self.task_infos, c.vocab_size)
        self.text_embeddings = TextEmbeddings(vocab_size, hidden, int(c.max_text_length), eps, pad_id=self.pad_id)
        self.image_embeddings = ImageEmbeddings(hidden, sizes["image_size"], sizes["patch_size"])
        self.transformer = MoMETransformer(
            sizes["num_layers"], hidden, sizes["num_heads"], sizes["ffn_size"], sizes["vl_ffn_layers"],
            shared_ffn=bool(c.shared_ffn), dropout=float(c.dropout), drop_path_rate=float(c.drop_path_rate),
            layer_scale_init=float(c.layer_scale_init), eps=eps)
        self.pooler = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())
        embed = int(c.itc_embedding_size or hidden)
        self.itc_image_projection = nn.Linear(hidden, embed)
        self.itc_text_projection = nn.Linear(hidden, embed)
        self.logit_scale = nn.Parameter(torch.tensor(float(c.logit_scale_init)))
        self.itm_head = nn.Linear(hidden, 2)
        self.mlm_head = objectives.MaskedLanguageModelHead(hidden, self.text_embeddings.word, eps)
        self.mim_head = nn.Linear(hidden, 3 * self.patch_size ** 2)
        self.heads = self.build_heads(hidden, dict(c.heads or {}))
        self.init_std = resolve_init_std(c)
        self.apply(functools.partial(_init_weights, std=self.init_std))
        self.bert_init_report: dict[str, list[str]] | None = None
        if c.init == "bert":
            from vlfw_vlmo.pretrained import load_bert

            self.bert_init_report = load_bert(self, c.bert_path)
        tasks = {info.task for info in self.task_infos.values()}  # none given: keep both passes
        self.trainable_groups = apply_stage(self, str(c.stage), fused=not tasks or bool(tasks - {"retrieval"}),
                                            dual=not tasks or bool(tasks & {"retrieval", "pretraining"}))
        self.rerank_k = int(c.retrieval.rerank_k)
        self.rerank_batch_size = int(c.retrieval.rerank_batch_size)
        if self.rerank_k < 0 or self.rerank_batch_size < 1:
            raise ConfigError("model_config.vlmo.retrieval.rerank_k must be >= 0 (0 = off) and "
                              f"rerank_batch_size >= 1, got {self.rerank_k} and {self.rerank_batch_size}")
        if self.rerank_k and "retrieval" in tasks:
            log.info("vlmo: retrieval evaluation re-ranks the dual encoder's top %d by ITM "
                     "(applied by the retrieval_recall metric)", self.rerank_k)

    # -- the three ways to run the one set of weights ---------------------------------------
    def _text_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        mask = input_ids != self.pad_id
        if attention_mask is not None:
            mask = mask & attention_mask.bool()
        mask = mask.clone()
        mask[:, 0] = True  # [T_CLS] always attends: a fully padded caption slot stays finite
        return mask

    # `cls_only=True` returns (B, 1, H): position 0 only, and the last layer computes that row
    # alone (same values as slicing the full output; what every [CLS]-pooled head needs)
    def encode_image(self, images: torch.Tensor, patch_mask: torch.Tensor | None = None,
                     cls_only: bool = False) -> torch.Tensor:
        """Image-only pass (V-FFN in every layer): (B, 1 + P, H), position 0 is [I_CLS]."""
        x = self.image_embeddings(images, patch_mask)
        is_text = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        return self.transformer(x, None, is_text, first=1 if cls_only else None)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    cls_only: bool = False) -> torch.Tensor:
        """Text-only pass (L-FFN in every layer): (B, L, H), position 0 is [T_CLS]."""
        mask = self._text_mask(input_ids, attention_mask)
        x = self.text_embeddings(input_ids)
        return self.transformer(x, mask, torch.ones_like(mask), first=1 if cls_only else None)

    def _fused(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               first: int | None = None) -> torch.Tensor:
        """The fused pass over [text; image]: states (B, L + 1 + P, H), or the first `first` rows."""
        text_mask = self._text_mask(input_ids, attention_mask)
        text = self.text_embeddings(input_ids)
        image = self.image_embeddings(images)
        x = torch.cat([text, image.to(text.dtype)], dim=1)
        image_mask = torch.ones(image.shape[:2], dtype=torch.bool, device=x.device)
        is_text = torch.cat([torch.ones_like(text_mask), ~image_mask], dim=1)
        return self.transformer(x, torch.cat([text_mask, image_mask], dim=1), is_text, fused=True, first=first)

    def encode_pair(self, images: torch.Tensor, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused pass over [text; image]: modality experts below, VL-FFN in the top layers.

        Returns (text states (B, L, H), image states (B, 1 + P, H))."""
        states = self._fused(images, input_ids, attention_mask)
        length = input_ids.shape[1]
        return states[:, :length], states[:, length:]

    def pooled_pair(self, images: torch.Tensor, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled fused [T_CLS] (Linear + tanh): the vector the ITM/VQA/NLVR2 heads read."""
        return self.pooler(self._fused(images, input_ids, attention_mask, first=1)[:, 0])

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """ITC projection of [I_CLS] (dual encoder), not normalised: (B, D)."""
        return self.itc_image_projection(self.encode_image(images, cls_only=True)[:, 0])

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ITC projection of [T_CLS], not normalised; (B, L) ids give (B, D), (B, K, L) give (B, K, D)."""
        lead = input_ids.shape[:-1]
        ids = input_ids.reshape(-1, input_ids.shape[-1])
        mask = None if attention_mask is None else attention_mask.reshape(ids.shape)
        return self.itc_text_projection(self.encode_text(ids, mask, cls_only=True)[:, 0]).view(*lead, -1)

    def image_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised ITC embedding of [I_CLS] (dual encoder)."""
        return F.normalize(self.image_features(images), dim=-1)

    def text_embedding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised ITC embedding of [T_CLS]; (B, K, L) ids give (B, K, D)."""
        return F.normalize(self.text_features(input_ids, attention_mask), dim=-1)

    def itm_logits(self, images: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.itm_head(self.pooled_pair(images, input_ids, attention_mask))

    # -- vlfw.metrics.rerank.PairScoringModel: ITM re-ranking of retrieval evaluation ---------
    def retrieval_rerank_k(self) -> int:
        """model_config.vlmo.retrieval.rerank_k (0 = dual encoder only)."""
        return self.rerank_k

    def retrieval_rerank_batch_size(self) -> int:
        return self.rerank_batch_size

    def score_pairs(self, batch: Batch) -> torch.Tensor:
        """ITM match score of each (image, caption) pair of the batch: 'match' minus 'no match' logit, (n,)."""
        logits = self.itm_logits(batch.image, batch.input_ids, batch.get("attention_mask")).float()
        return logits[:, 1] - logits[:, 0]

    # -- tasks -------------------------------------------------------------------------------
    @staticmethod
    def _images(batch: Batch) -> torch.Tensor:
        if "image" not in batch:
            raise ConfigError("vlmo works on images (patches): set the dataset's visual: images")
        return batch.image

    @provides("retrieval", features=("image_pooled", "text_pooled", "logit_scale"))
    def retrieval_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The dual encoder: ITC projections of [I_CLS] and [T_CLS], and the learned temperature."""
        return {"image_pooled": self.image_features(self._images(batch)),
                "text_pooled": self.text_features(batch.input_ids, batch.get("attention_mask")),
                "logit_scale": self.logit_scale}

    @provides("nlvr2", features=("pooled_pair",))
    def pair_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One fused pass per image, batched together; the two pooled vectors concatenated."""
        images = self._images(batch)  # (B, 2, 3, H, W)
        mask = batch.get("attention_mask")
        b = images.shape[0]
        ids = batch.input_ids.repeat(2, 1)
        pair_mask = None if mask is None else mask.repeat(2, 1)
        both = images.transpose(0, 1).reshape(2 * b, *images.shape[2:])
        pooled = self.pooled_pair(both, ids, pair_mask)
        return {"pooled_pair": torch.cat([pooled[:b], pooled[b:]], dim=-1)}

    @provides("vqa", "classification", features=("pooled",))
    def pooled_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"pooled": self.pooled_pair(self._images(batch), batch.input_ids, batch.get("attention_mask"))}

    @provides("pretraining")
    def pretraining_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The stage's objectives, unweighted (dataset_config.<d>.loss_weights weights them;
        the released code weights MLM 0.25: the Shapes and CC3M recipes say so)."""
        stage = str(self.config.stage)
        if stage == "vision":
            return {"loss/mim": self.masked_image_loss(batch.image)}
        labels = batch.get("mlm_labels")
        mask = batch.get("attention_mask")
        if stage == "language":
            if labels is None:
                raise ConfigError("vlmo stage=language needs masked text: set the dataset's "
                                  "processors.masking.params.probability > 0")
            return {"loss/mlm": self.mlm_head(self.encode_text(batch.input_ids, mask), labels)}
        clean_ids = batch.input_ids if labels is None else torch.where(labels != -100, labels, batch.input_ids)
        images = batch.image
        contrast = image_text_contrastive(self.image_embedding(images), self.text_embedding(clean_ids, mask),
                                          self.logit_scale)
        losses = {"loss/itc": contrast.loss}
        text_mask = self._text_mask(clean_ids, mask)
        pair_images, pair_ids, pair_mask, itm_labels = itm_pairs(images, clean_ids, text_mask, contrast,
                                                                 pad_id=self.pad_id)
        itm_logits = self.itm_logits(pair_images, pair_ids, pair_mask)
        losses["loss/itm"] = F.cross_entropy(itm_logits.float(), itm_labels)
        if labels is not None:
            text_states, _ = self.encode_pair(images, batch.input_ids, mask)
            losses["loss/mlm"] = self.mlm_head(text_states, labels)
        return losses

    def masked_image_loss(self, images: torch.Tensor) -> torch.Tensor:
        """Vision stage: regress per-patch-normalised pixels of randomly masked patches (MSE)."""
        targets = objectives.patch_targets(images.float(), self.patch_size)
        patch_mask = objectives.random_patch_mask(targets.shape[0], targets.shape[1],
                                                  float(self.config.mim_mask_ratio), images.device)
        states = self.encode_image(images, patch_mask)[:, 1:]
        predictions = self.mim_head(states[patch_mask]).float()
        return F.mse_loss(predictions, targets[patch_mask])
