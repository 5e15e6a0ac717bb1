"""FIBER: fusion in the backbone. One Swin + BERT pair run as a fused encoder (VQA, NLVR2, ITM, MLM),
a dual encoder (ITC, retrieval) and a captioning decoder, with the pre-training objectives and task heads."""

from __future__ import annotations

import logging
import re
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torchvision.models.swin_transformer import SwinTransformer
from transformers import BertConfig, BertModel

from vlfw.data.batch import Batch
from vlfw.errors import ConfigError
from vlfw.losses.contrastive import image_text_contrastive, itm_pairs
from vlfw.models.base import BaseModel, provides
from vlfw.registry import MODELS
from vlfw.tasks import TaskInfo, text_settings
from vlfw_fiber.attention import KeysValues
from vlfw_fiber.config import CONFIG_CHOICES, DEFAULT_CONFIG, resolve_init_std, resolve_sizes, resolve_text_init
from vlfw_fiber.encoder import Encoded, FusionEncoder
from vlfw_fiber.heads import LanguageModelHead
from vlfw_fiber.image_backbone import SwinBackbone
from vlfw_fiber.losses import MAX_LOGIT_SCALE
from vlfw_fiber.text_backbone import BertBackbone

log = logging.getLogger(__name__)

TEMPERATURE_RANGE = (0.001, 1.0)

# parameter families (regexes on names) and the tasks that train them; the rest of a run's
# families are frozen (requires_grad False) so that DDP needs no find_unused_parameters
FAMILIES = {
    "image_fusion": r"^encoder\.image\..*\.fusion_",
    "text_fusion": r"^encoder\.text\..*\.fusion_",
    "fused_poolers": r"^fused_(text|image)_pooler\.",
    "itc": r"^itc_",
    "itm_head": r"^itm_head\.",
    "mlm_head": r"^mlm_head\.",
    # Swin's final norm: every coarse mode ends in it; the fine-grained stage reads the raw stage maps
    "image_final_norm": r"^encoder\.image\.norm\.",
}
FUSED = {"image_fusion", "text_fusion", "fused_poolers", "image_final_norm"}
USES = {
    "pretraining": set(FAMILIES),
    "vqa": FUSED, "classification": FUSED, "nlvr2": FUSED,
    "retrieval": {"itc", "image_final_norm"},
    "captioning": {"text_fusion", "mlm_head", "image_final_norm"},
    # the fine-grained stage: both cross-attention directions (the maps and the text states are fused)
    "dense_rec": {"image_fusion", "text_fusion"}, "dense_grounding": {"image_fusion", "text_fusion"},
}


def _pooler(in_size: int, out_size: int) -> nn.Sequential:
    linear = nn.Linear(in_size, out_size)
    nn.init.trunc_normal_(linear.weight, std=0.02)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(linear, nn.Tanh())


@MODELS.register("fiber")
class FIBER(BaseModel):
    """Swin + BERT with gated cross-attention in the top K layers of both; ITC / ITM / MLM and task heads."""

    DEFAULT_CONFIG = DEFAULT_CONFIG
    CONFIG_CHOICES = CONFIG_CHOICES
    TASK_HEADS = {"retrieval": "fiber_embedding", "dense_rec": "fiber_grounding", "dense_grounding": "fiber_grounding"}
    VISUAL_INPUTS = ("images",)
    CARD_CONFIG = {"text_init": "random"}

    def __init__(self, config, task_infos: Mapping[str, TaskInfo]) -> None:
        super().__init__(config, task_infos)
        c = self.config
        self.sizes = s = resolve_sizes(c)
        unsupported = sorted(d for d, info in self.task_infos.items() if info.visual != "images")
        if unsupported:
            raise ConfigError(f"fiber works on images (Swin): datasets {unsupported} must set visual: images")
        tasks = {info.task for info in self.task_infos.values()}
        self.fusion_layers = k = int(s["fusion_layers"])
        if "captioning" in tasks and k == 0:
            raise ConfigError("fiber captioning cross-attends in the top fusion_layers text layers: "
                              "model_config.fiber.fusion_layers must be > 0")
        vocab_size, self.pad_id = text_settings(self.task_infos, c.vocab_size)
        dropout = float(c.dropout)
        swin = SwinTransformer(patch_size=[s["patch_size"]] * 2, embed_dim=s["embed_dim"], depths=s["depths"],
                               num_heads=s["image_heads"], window_size=[s["window_size"]] * 2,
                               stochastic_depth_prob=float(c.drop_path_rate), num_classes=1)
        hidden = s["text_hidden"]
        bert_config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=s["text_layers"],
                                 num_attention_heads=s["text_heads"], intermediate_size=s["text_ffn"],
                                 max_position_embeddings=int(c.max_text_length), pad_token_id=self.pad_id,
                                 hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                                 initializer_range=resolve_init_std(c))
        self.text_init = resolve_text_init(c)
        if self.text_init == "bert":
            from vlfw_fiber.pretrained import load_bert

            bert = load_bert(c.bert_path, bert_config)
        else:
            bert = BertModel(bert_config, add_pooling_layer=False)
        image = SwinBackbone(swin, k, hidden, dropout)
        pairs = range(image.num_blocks - k, image.num_blocks)
        text = BertBackbone(bert, [image.width_of(j) for j in pairs], dropout)
        self.encoder = FusionEncoder(image, text, k)
        gate_init = float(c.fusion_gate_init)
        if gate_init != 0.0:  # the paper's 0 keeps every backbone exactly unimodal at the start
            for name, parameter in self.encoder.named_parameters():
                if name.endswith("fusion_gate"):
                    nn.init.constant_(parameter, gate_init)
        self.hidden_size = hidden
        image_dim = image.out_dim
        self.fused_text_pooler = _pooler(hidden, hidden)
        self.fused_image_pooler = _pooler(image_dim, hidden)
        embed = int(c.itc_embedding_size or hidden)
        self.itc_text_pooler = _pooler(hidden, embed)
        self.itc_image_pooler = _pooler(image_dim, embed)
        self.itc_temperature = nn.Parameter(torch.tensor(float(c.temperature_init)))
        self.itm_head = nn.Linear(2 * hidden, 2)
        self.mlm_head = LanguageModelHead(hidden, vocab_size, float(bert_config.layer_norm_eps))
        # captioning: the top text layers cross-attend to Swin's final tokens; a layer paired with an
        # earlier (narrower) stage reads them through a Linear to that stage's width
        self.caption_fusion_adapters = nn.ModuleDict()
        if "captioning" in tasks:
            for i, layer in enumerate(text.layers):
                if layer.fused and layer.image_dim != image_dim:
                    self.caption_fusion_adapters[str(i)] = nn.Linear(image_dim, layer.image_dim)
        # the fine-grained head (fiber_grounding) reads the stage maps: their widths and strides, the text width
        self.image_channels = list(image.widths)
        self.image_strides = [int(s["patch_size"]) * 2 ** i for i in range(len(self.image_channels))]
        # VQA: Linear(2h, 2h)-LN-GELU-Linear(answers); NLVR2: Linear(4h, 2h)-LN-GELU-Linear(2)
        self.heads = self.build_heads(2 * hidden, dict(c.heads or {}),
                                      head_defaults={"mlp_ratio": 1.0, "dropout": float(c.head_dropout),
                                                     "image_channels": self.image_channels,
                                                     "image_strides": self.image_strides, "text_dim": hidden,
                                                     "grounding": OmegaConf.to_container(c.grounding, resolve=True)})
        self.frozen_families = self._freeze_unused(tasks) + self._freeze_unread_image_blocks(tasks)
        self.rerank_k = int(c.retrieval.rerank_k)
        self.rerank_batch_size = int(c.retrieval.rerank_batch_size)
        if self.rerank_k < 0 or self.rerank_batch_size < 1:
            raise ConfigError("model_config.fiber.retrieval.rerank_k must be >= 0 (0 = off) and "
                              f"rerank_batch_size >= 1, got {self.rerank_k} and {self.rerank_batch_size}")

    def _freeze_unused(self, tasks: set[str]) -> list[str]:
        """Freeze the parameter families no task of the run trains; returns the frozen families."""
        if not tasks:
            return []
        used = set().union(*(USES.get(task, set(FAMILIES)) for task in tasks))
        frozen = [name for name in FAMILIES if name not in used]
        patterns = [re.compile(FAMILIES[name]) for name in frozen]
        for name, parameter in self.named_parameters():
            if any(p.search(name) for p in patterns):
                parameter.requires_grad_(False)
        return frozen

    def _freeze_unread_image_blocks(self, tasks: set[str]) -> list[str]:
        """A fine-grained-only run whose heads read no map of the last stage(s) never uses the top image
        blocks whose output reaches neither a read map nor a fused text layer: freeze them (DDP then
        needs no find_unused_parameters). Returns their names, `image_block_<j>`."""
        if not tasks or not tasks <= {"dense_rec", "dense_grounding"}:
            return []
        read = [max(head.stages) for head in self.heads.heads.values() if hasattr(head, "stages")]
        if not read:
            return []
        image = self.encoder.image
        last_read = max(j for j, (stage, _) in enumerate(image.blocks) if stage <= max(read))
        # text layer paired with fused block j reads the image ENTERING block j: block j - 1's output
        feeds_text = [j - 1 for j in range(image.num_blocks) if image.is_fused(j)]
        last_used = max([last_read] + feeds_text)
        frozen = []
        for j in range(last_used + 1, image.num_blocks):
            for parameter in image.block(j).parameters():
                parameter.requires_grad_(False)
            frozen.append(f"image_block_{j}")
        return frozen

    # -- inputs --------------------------------------------------------------------------------
    def text_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T) bool, True = a real token; position 0 always (a fully padded caption stays finite)."""
        mask = input_ids != self.pad_id
        if attention_mask is not None:
            mask = mask & attention_mask.bool()
        mask = mask.clone()
        mask[:, 0] = True
        return mask

    @staticmethod
    def _images(batch: Batch) -> torch.Tensor:
        if "image" not in batch:
            raise ConfigError(f"fiber works on images: the batch of {batch.dataset_name!r} has no `image` "
                              f"(set the dataset's visual: images)")
        return batch.image

    # -- the fused encoder ---------------------------------------------------------------------
    def encode_pair(self, images: torch.Tensor, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor | None = None) -> Encoded:
        return self.encoder.fused(images, input_ids, self.text_mask(input_ids, attention_mask))

    def pooled_pair(self, images: torch.Tensor, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """concat(text pooler of the first token, image pooler of the mean image token): (B, 2h)."""
        encoded = self.encode_pair(images, input_ids, attention_mask)
        return torch.cat([self.fused_text_pooler(encoded.text[:, 0]),
                          self.fused_image_pooler(encoded.image_tokens.mean(dim=1))], dim=-1)

    def itm_logits(self, images: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.itm_head(self.pooled_pair(images, input_ids, attention_mask))

    def fused_features(self, batch: Batch) -> dict[str, Any]:
        """For the fine-grained (grounding) stage: `image_maps` the fused stage outputs [B, C_i, H_i, W_i]
        (channels-first, one per Swin stage, no final norm), `text_states` [B, T, D], `text_mask` [B, T]
        bool (True = real token)."""
        input_ids = batch.input_ids
        encoded = self.encode_pair(self._images(batch), input_ids, batch.get("attention_mask"))
        return {"image_maps": [m.permute(0, 3, 1, 2) for m in encoded.image_maps],
                "text_states": encoded.text, "text_mask": encoded.text_mask}

    # -- the dual encoder ----------------------------------------------------------------------
    def logit_scale(self) -> torch.Tensor:
        """log(1 / temperature), the temperature learned and kept in [0.001, 1]."""
        if self.training and self.itc_temperature.requires_grad:
            with torch.no_grad():  # clamp the parameter itself, so its gradient never vanishes at a bound
                self.itc_temperature.clamp_(*TEMPERATURE_RANGE)
        return -torch.log(self.itc_temperature.clamp(*TEMPERATURE_RANGE))

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """ITC pooler (Linear + tanh) of the average-pooled unfused image tokens, not normalised: (B, E)."""
        return self.itc_image_pooler(self.encoder.encode_image(images).image_tokens.mean(dim=1))

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ITC pooler of the unfused first token, not normalised; (B, L) ids give (B, E), (B, K, L) give (B, K, E)."""
        lead = input_ids.shape[:-1]
        ids = input_ids.reshape(-1, input_ids.shape[-1])
        mask = None if attention_mask is None else attention_mask.reshape(ids.shape)
        states = self.encoder.encode_text(ids, self.text_mask(ids, mask))
        return self.itc_text_pooler(states[:, 0]).view(*lead, -1)

    def image_embedding(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_features(images), dim=-1)

    def text_embedding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return F.normalize(self.text_features(input_ids, attention_mask), dim=-1)

    # -- vlfw.runner.rerank.PairScoringModel: ITM re-ranking of retrieval evaluation ------------
    def retrieval_rerank_k(self) -> int:
        return self.rerank_k

    def retrieval_rerank_batch_size(self) -> int:
        return self.rerank_batch_size

    def score_pairs(self, batch: Batch) -> torch.Tensor:
        """ITM match score of each (image, caption) pair: 'match' minus 'no match' logit, (n,)."""
        logits = self.itm_logits(batch.image, batch.input_ids, batch.get("attention_mask")).float()
        return logits[:, 1] - logits[:, 0]

    # -- tasks ---------------------------------------------------------------------------------
    @provides("vqa", "classification", features=("pooled",))
    def pooled_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"pooled": self.pooled_pair(self._images(batch), batch.input_ids, batch.get("attention_mask"))}

    @provides("nlvr2", features=("pooled_pair",))
    def pair_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Two fused passes (one per image, batched together); the two pooled vectors concatenated (B, 4h)."""
        images = self._images(batch)  # (B, 2, 3, H, W)
        b = images.shape[0]
        mask = batch.get("attention_mask")
        both = images.transpose(0, 1).reshape(2 * b, *images.shape[2:])
        pooled = self.pooled_pair(both, batch.input_ids.repeat(2, 1), None if mask is None else mask.repeat(2, 1))
        return {"pooled_pair": torch.cat([pooled[:b], pooled[b:]], dim=-1)}

    @provides("retrieval", features=("image_pooled", "text_pooled", "logit_scale"))
    def retrieval_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The dual encoder: ITC-pooled image and text, and the learned temperature (as log 1/T)."""
        return {"image_pooled": self.image_features(self._images(batch)),
                "text_pooled": self.text_features(batch.input_ids, batch.get("attention_mask")),
                "logit_scale": self.logit_scale()}

    @provides("dense_rec", "dense_grounding", features=("image_maps", "text_states", "text_mask"))
    def dense_features(self, batch: Batch) -> dict[str, Any]:
        """The fine-grained stage's input (`fused_features`): the fused stage maps and text states."""
        return self.fused_features(batch)

    @provides("pretraining")
    def pretraining_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """ITC (dual encoder, negatives from every rank), ITM (one hard negative text and image per
        pair from the ITC similarities), MLM on the fused pass when the batch is masked; unweighted."""
        images = self._images(batch)
        labels = batch.get("mlm_labels")
        mask = batch.get("attention_mask")
        clean_ids = batch.input_ids if labels is None else torch.where(labels != -100, labels, batch.input_ids)
        contrast = image_text_contrastive(self.image_embedding(images), self.text_embedding(clean_ids, mask),
                                          self.logit_scale(), max_logit_scale=MAX_LOGIT_SCALE)
        losses = {"loss/itc": contrast.loss}
        pair_images, pair_ids, pair_mask, itm_labels = itm_pairs(images, clean_ids, self.text_mask(clean_ids, mask),
                                                                 contrast, pad_id=self.pad_id)
        losses["loss/itm"] = F.cross_entropy(self.itm_logits(pair_images, pair_ids, pair_mask).float(), itm_labels)
        if labels is not None:
            losses["loss/mlm"] = self.mlm_head.masked_loss(self.encode_pair(images, batch.input_ids, mask).text, labels)
        return losses

    # -- captioning: the text backbone as a causal decoder over the final image tokens ----------
    def caption_memory(self, images: torch.Tensor) -> list[KeysValues | None]:
        """Per text layer: the cross-attention keys/values of Swin's final tokens (None: an unfused layer)."""
        tokens = self.encoder.encode_image(images).image_tokens
        memory: list[KeysValues | None] = []
        for i, layer in enumerate(self.encoder.text.layers):
            if not layer.fused:
                memory.append(None)
                continue
            adapter = self.caption_fusion_adapters[str(i)] if str(i) in self.caption_fusion_adapters else None
            memory.append(layer.fusion_attention.keys_values(tokens if adapter is None else adapter(tokens)))
        return memory

    def decode(self, input_ids: torch.Tensor, start: int, mask: torch.Tensor | None, memory: list[KeysValues | None],
               past: list[KeysValues] | None) -> tuple[torch.Tensor, list[KeysValues]]:
        """LM logits (N, T, V) of the tokens at positions start .. start + T - 1, and every layer's keys/values."""
        x = self.encoder.text.embed(input_ids, start)
        cache = []
        for i, layer in enumerate(self.encoder.text.layers):
            x, kv = layer(x, mask, image_keys_values=memory[i], past=None if past is None else past[i])
            cache.append(kv)
        return self.mlm_head(x), cache

    @provides("captioning", features=("caption_logits",))
    def caption_logits(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Teacher forcing under a causal mask: caption_logits (B, L, V), position t predicting input_ids[t + 1]."""
        input_ids = batch.input_ids
        length = input_ids.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
        keys = self.text_mask(input_ids, batch.get("attention_mask"))
        mask = causal[None, None] & keys[:, None, None, :]
        logits, _ = self.decode(input_ids, 0, mask, self.caption_memory(self._images(batch)), None)
        return {"caption_logits": logits}

    # vlfw.generation.GenerativeModel
    def generation_context(self, batch: Batch) -> dict[str, torch.Tensor]:
        context = {}
        for i, kv in enumerate(self.caption_memory(self._images(batch))):
            if kv is not None:
                context[f"keys.{i}"], context[f"values.{i}"] = kv
        return context

    def generation_step(self, input_ids: torch.Tensor, context: dict[str, torch.Tensor],
                        cache: Any) -> tuple[torch.Tensor, list[KeysValues]]:
        start = 0 if cache is None else int(cache[0][0].shape[2])
        memory = [(context[f"keys.{i}"], context[f"values.{i}"]) if f"keys.{i}" in context else None
                  for i in range(self.encoder.text.num_layers)]
        logits, cache = self.decode(input_ids, start, None, memory, cache)
        return logits[:, -1], cache
