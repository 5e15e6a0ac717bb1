"""caption_baseline: a small image-to-text Transformer decoder, the core's captioning baseline.

The image becomes memory tokens: the SmallCNN feature-map cells (plus the pooled vector, with
learned row/column embeddings) for `image` batches, or the RegionEncoder states (plus their
pooled vector) for `region_features` batches. A pre-LN Transformer decoder (causal
self-attention, cross-attention to the memory, both through scaled_dot_product_attention)
predicts the next token; the output layer is the token embedding (tied). Training is teacher
forcing on batch.input_ids (the `caption_cross_entropy` loss reads `caption_logits`); evaluation
generates through vlfw.generation with the model's own KV cache.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from vlfw.data.batch import Batch
from vlfw.errors import ConfigError
from vlfw.models.base import BaseModel, provides
from vlfw.modules.encoders import RegionEncoder, RegionFeatureNorm, SmallCNN
from vlfw.registry import MODELS
from vlfw.tasks import TaskInfo

LayerCache = tuple[torch.Tensor, torch.Tensor]  # self-attention keys, values (N, heads, t, head size)


class Attention(nn.Module):
    """Multi-head attention; `past` (keys, values) are prepended to this call's keys and values."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ConfigError(f"caption_baseline: hidden_size {hidden_size} is not divisible by heads {num_heads}")
        self.num_heads = num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key_value = nn.Linear(hidden_size, 2 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.dropout = dropout

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, H) -> (N, heads, T, H / heads)."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def keys_values(self, x: torch.Tensor) -> LayerCache:
        keys, values = self.key_value(x).chunk(2, dim=-1)
        return self.split(keys), self.split(values)

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        """x (N, T, H) attends to keys/values (N, heads, S, d); mask (N, 1, T or 1, S) True = attend."""
        out = F.scaled_dot_product_attention(self.split(self.query(x)), keys, values, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out(out.transpose(1, 2).flatten(2))


class DecoderLayer(nn.Module):
    """Pre-LN: x + self-attention, x + cross-attention to the memory, x + MLP."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(hidden_size)
        self.self_attention = Attention(hidden_size, num_heads, dropout)
        self.cross_norm = nn.LayerNorm(hidden_size)
        self.cross_attention = Attention(hidden_size, num_heads, dropout)
        self.mlp_norm = nn.LayerNorm(hidden_size)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, 4 * hidden_size), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(4 * hidden_size, hidden_size))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, self_mask: torch.Tensor | None, memory: LayerCache,
                memory_mask: torch.Tensor, past: LayerCache | None = None) -> tuple[torch.Tensor, LayerCache]:
        h = self.self_norm(x)
        keys, values = self.self_attention.keys_values(h)
        if past is not None:
            keys, values = torch.cat([past[0], keys], dim=2), torch.cat([past[1], values], dim=2)
        x = x + self.dropout(self.self_attention(h, keys, values, self_mask))
        x = x + self.dropout(self.cross_attention(self.cross_norm(x), *memory, memory_mask))
        x = x + self.dropout(self.mlp(self.mlp_norm(x)))
        return x, (keys, values)


_DEFAULTS = {
    "hidden_size": 256,
    "num_layers": 3,
    "num_heads": 4,
    "dropout": 0.1,
    "max_length": 40,         # positions of the decoder: the longest caption, bos and eos included
    "cnn_channels": [32, 64, 96, 128],
    "max_grid": 32,           # the largest feature map side (image side / 16 with four CNN blocks)
    "region_feature_size": None,  # only when the dataset's TaskInfo does not say
}


@MODELS.register("caption_baseline")
class CaptionBaseline(BaseModel):
    """SmallCNN cells or region states as memory + a small pre-LN Transformer decoder."""

    DEFAULT_CONFIG = _DEFAULTS
    VISUAL_INPUTS = ("images", "regions")

    def __init__(self, config, task_infos: Mapping[str, TaskInfo]) -> None:
        super().__init__(config, task_infos)
        c = self.config
        hidden, self.num_heads = int(c.hidden_size), int(c.num_heads)
        text = self._text_info()
        self.pad_id = int(text.pad_id)
        self.max_length = int(c.max_length)
        visuals = {info.visual for info in self.task_infos.values()}
        unknown = visuals - {"images", "regions"}
        if unknown:
            without = sorted(d for d, i in self.task_infos.items() if i.visual in unknown)
            raise ConfigError(f"caption_baseline needs images or region features; datasets {without} give "
                              f"visual {sorted(map(str, unknown))}")
        # only the encoders the datasets need: DDP requires every parameter to get a gradient
        if "images" in visuals:
            self.image_encoder = SmallCNN(hidden, tuple(int(x) for x in c.cnn_channels), with_regions=False)
            self.cell_project = nn.Linear(int(c.cnn_channels[-1]), hidden)
            self.rows = nn.Embedding(int(c.max_grid), hidden)
            self.columns = nn.Embedding(int(c.max_grid), hidden)
        if "regions" in visuals:
            self.region_norm = RegionFeatureNorm(self.task_infos)
            self.region_encoder = RegionEncoder(self._region_feature_size(), hidden, float(c.dropout))
        self.memory_kind = nn.Embedding(2, hidden)  # the pooled token vs the cells / regions
        self.memory_norm = nn.LayerNorm(hidden)
        self.tokens = nn.Embedding(int(text.vocab_size), hidden)
        self.positions = nn.Embedding(self.max_length, hidden)
        self.embedding_dropout = nn.Dropout(float(c.dropout))
        self.layers = nn.ModuleList(DecoderLayer(hidden, self.num_heads, float(c.dropout))
                                    for _ in range(int(c.num_layers)))
        self.norm = nn.LayerNorm(hidden)
        self.output_bias = nn.Parameter(torch.zeros(int(text.vocab_size)))
        nn.init.normal_(self.tokens.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)

    def _text_info(self):
        texts = {name: info.text for name, info in self.task_infos.items()}
        missing = sorted(name for name, text in texts.items() if text is None)
        if missing:
            raise ConfigError(f"caption_baseline: datasets {missing} give no TaskInfo.text (tokenizer ids)")
        shapes = {(t.vocab_size, t.pad_id) for t in texts.values()}
        if len(shapes) != 1:
            raise ConfigError(f"caption_baseline: the datasets use different tokenizers (vocab size, pad id): "
                              f"{sorted(shapes)}")
        return next(iter(texts.values()))

    def _region_feature_size(self) -> int:
        sizes = {info.region_feature_size for info in self.task_infos.values()
                 if info.visual == "regions" and info.region_feature_size is not None}
        if len(sizes) > 1:
            raise ConfigError(f"caption_baseline: datasets give different region feature sizes: {sorted(sizes)}")
        if sizes:
            return int(sizes.pop())
        if self.config.get("region_feature_size") is None:
            raise ConfigError("caption_baseline: the region datasets do not say their feature size; set "
                              "model_config.caption_baseline.region_feature_size")
        return int(self.config.region_feature_size)

    # -- the image as memory ---------------------------------------------------------------------
    def encode_visual(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(memory (B, 1 + S, H), mask (B, 1 + S) True = real): the pooled token, then cells or regions."""
        if "image" in batch and hasattr(self, "image_encoder"):
            fmap, pooled = self.image_encoder(batch.image)
            height, width = fmap.shape[-2:]
            if max(height, width) > self.rows.num_embeddings:
                raise ConfigError(f"caption_baseline: a {height}x{width} feature map exceeds max_grid "
                                  f"{self.rows.num_embeddings}; raise model_config.caption_baseline.max_grid")
            cells = self.cell_project(fmap.flatten(2).transpose(1, 2))
            grid = (self.rows.weight[:height, None] + self.columns.weight[None, :width]).flatten(0, 1)
            states = cells + grid
            mask = torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)
        elif "region_features" in batch and hasattr(self, "region_encoder"):
            features = self.region_norm(batch.region_features, batch.dataset_name)
            mask = batch.get("region_mask")
            if mask is None:
                mask = torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
            states, pooled = self.region_encoder(features, batch.region_boxes, batch.image_size, mask)
            mask = mask.bool()
        else:
            raise ConfigError(f"caption_baseline built for {sorted({i.visual for i in self.task_infos.values()})}, "
                              f"but the batch of {batch.dataset_name!r} has fields {sorted(batch)}")
        memory = torch.cat([pooled[:, None] + self.memory_kind.weight[0], states + self.memory_kind.weight[1]], dim=1)
        mask = torch.cat([mask.new_ones(len(mask), 1), mask], dim=1)
        return self.memory_norm(memory), mask

    def memory_keys_values(self, memory: torch.Tensor) -> list[LayerCache]:
        """Every layer's cross-attention keys and values of the memory."""
        return [layer.cross_attention.keys_values(memory) for layer in self.layers]

    # -- the decoder -----------------------------------------------------------------------------
    def decode(self, input_ids: torch.Tensor, start: int, self_mask: torch.Tensor | None,
               memory: list[LayerCache], memory_mask: torch.Tensor,
               past: list[LayerCache] | None) -> tuple[torch.Tensor, list[LayerCache]]:
        """Logits (N, T, V) of tokens at positions start.. start+T-1, and every layer's keys/values."""
        length = input_ids.shape[1]
        if start + length > self.max_length:
            raise ConfigError(f"caption_baseline: a caption of {start + length} tokens exceeds max_length "
                              f"{self.max_length}; raise model_config.caption_baseline.max_length or shorten the "
                              f"tokenizer's max_length / generation.max_length")
        positions = torch.arange(start, start + length, device=input_ids.device)
        x = self.embedding_dropout(self.tokens(input_ids) + self.positions(positions))
        cross_mask = memory_mask[:, None, None, :]
        new_cache = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, self_mask, memory[i], cross_mask, None if past is None else past[i])
            new_cache.append(kv)
        return F.linear(self.norm(x), self.tokens.weight, self.output_bias), new_cache

    @provides("captioning", features=("caption_logits",))
    def caption_logits(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Teacher forcing: caption_logits (B, L, V), position t predicting input_ids[t + 1]."""
        memory, memory_mask = self.encode_visual(batch)
        input_ids = batch.input_ids
        length = input_ids.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
        keys = batch.get("attention_mask")
        mask = causal[None, None] if keys is None else causal[None, None] & keys.bool()[:, None, None, :]
        logits, _ = self.decode(input_ids, 0, mask, self.memory_keys_values(memory), memory_mask, None)
        return {"caption_logits": logits}

    # -- generation (vlfw.generation.GenerativeModel) ----------------------------------------------
    def generation_context(self, batch: Batch) -> dict[str, torch.Tensor]:
        memory, memory_mask = self.encode_visual(batch)
        context = {"memory_mask": memory_mask}
        for i, (keys, values) in enumerate(self.memory_keys_values(memory)):
            context[f"keys.{i}"], context[f"values.{i}"] = keys, values
        return context

    def generation_step(self, input_ids: torch.Tensor, context: dict[str, torch.Tensor],
                        cache: Any) -> tuple[torch.Tensor, list[LayerCache]]:
        start = 0 if cache is None else int(cache[0][0].shape[2])
        memory = [(context[f"keys.{i}"], context[f"values.{i}"]) for i in range(len(self.layers))]
        logits, cache = self.decode(input_ids, start, None, memory, context["memory_mask"], cache)
        return logits[:, -1], cache
