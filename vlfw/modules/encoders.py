"""Small shared encoders: a CNN for images, an MLP for region features, a Transformer for text."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from vlfw.processors.boxes import relative_box_geometry
from vlfw.registry import ENCODERS


def masked_mean(states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over dim -2 of `states` (..., T, H) counting only positions where mask (..., T) is True."""
    if mask is None:
        return states.mean(dim=-2)
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(dim=-2) / weights.sum(dim=-2).clamp(min=1.0)


@ENCODERS.register("small_cnn")
class SmallCNN(nn.Module):
    """A few stride-2 conv blocks (GroupNorm, GELU); returns the feature map and a pooled vector.

    `stride` is the total downsampling factor, used to RoIAlign boxes onto the map. With
    `grid` > 0 the pooled vector keeps a coarse layout (the map average-pooled to grid x grid and
    flattened: what is where); with 0 it is the global mean.
    """

    def __init__(self, hidden_size: int, channels: tuple[int, ...] = (32, 64, 96, 128),
                 with_regions: bool = True, grid: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for out_channels in channels:
            layers += [
                nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
                nn.GroupNorm(min(8, out_channels), out_channels),
                nn.GELU(),
            ]
            in_channels = out_channels
        self.body = nn.Sequential(*layers)
        self.stride = 2 ** len(channels)
        self.grid = grid
        self.project = nn.Linear(in_channels * max(grid, 1) ** 2, hidden_size)
        self.region_project = nn.Linear(in_channels * 4, hidden_size) if with_regions else None

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) -> (feature map (B, C, h, w), pooled (B, hidden))."""
        fmap = self.body(images)
        if self.grid:
            pooled = F.adaptive_avg_pool2d(fmap, self.grid).flatten(1)
        else:
            pooled = fmap.mean(dim=(2, 3))
        return fmap, self.project(pooled)

    def regions(self, fmap: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """RoIAlign 2x2 per box: fmap (B, C, h, w), boxes (B, N, 4) in image pixels -> (B, N, hidden)."""
        batch, num = boxes.shape[:2]
        index = torch.arange(batch, device=boxes.device, dtype=boxes.dtype).repeat_interleave(num)
        rois = torch.cat([index[:, None], boxes.reshape(-1, 4)], dim=1)
        pooled = roi_align(fmap, rois.to(fmap.dtype), output_size=2, spatial_scale=1.0 / self.stride,
                           sampling_ratio=2, aligned=True)
        return self.region_project(pooled.flatten(1)).view(batch, num, -1)


class RegionFeatureNorm(nn.Module):
    """Z-scores region features per dimension with each dataset's train-split statistics.

    Built from the task infos: a dataset whose TaskInfo carries `region_feature_mean` /
    `region_feature_std` (dataset_config.<d>.features.normalize, on by default; fitted in
    vlfw/datasets/feature_stats.py) gets two buffers, `<dataset>_mean` and `<dataset>_std`. They
    are part of the state dict, so checkpoints and exported weights carry the statistics the
    model was trained with and evaluation applies exactly those. A dataset without statistics
    (normalisation off, or an evaluation-only run without a train split before the checkpoint
    is loaded) passes its features through unchanged.
    """

    def __init__(self, task_infos) -> None:
        super().__init__()
        self.datasets: list[str] = []
        for name, info in task_infos.items():
            mean, std = getattr(info, "region_feature_mean", None), getattr(info, "region_feature_std", None)
            if mean is None or std is None:
                continue
            self.register_buffer(f"{name}_mean", torch.tensor(mean, dtype=torch.float32))
            self.register_buffer(f"{name}_std", torch.tensor(std, dtype=torch.float32))
            self.datasets.append(str(name))

    def forward(self, features: torch.Tensor, dataset: str | None) -> torch.Tensor:
        """features (..., D) of `dataset` -> standardised features (unchanged without its statistics)."""
        if dataset not in self.datasets:
            return features
        mean, std = getattr(self, f"{dataset}_mean"), getattr(self, f"{dataset}_std")
        return (features - mean.to(features.dtype)) / std.to(features.dtype)


@ENCODERS.register("region_mlp")
class RegionEncoder(nn.Module):
    """Region features + normalised box geometry -> hidden, and a masked-mean pooled vector.

    The pooled vector is the mean of a per-region MLP of the states (a DeepSets pooling). The
    states are a linear map of the features (then LayerNorm), so their mean is close to a map of
    the summed features, in which "a red star and a blue square" and "a blue star and a red
    square" nearly coincide; the MLP lets each region write the conjunction of its attributes
    before the mean. The regions baseline with it: 42.8 on Shapes VQA against the blind 35.5
    after 3000 updates (docs/benchmarks.md).
    """

    def __init__(self, feature_size: int, hidden_size: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.feature = nn.Linear(feature_size, hidden_size)
        self.geometry = nn.Linear(7, hidden_size)
        self.norm = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.pool_mlp = nn.Sequential(nn.Linear(hidden_size, 2 * hidden_size), nn.GELU(),
                                      nn.Linear(2 * hidden_size, hidden_size))

    def forward(self, features: torch.Tensor, boxes: torch.Tensor, image_size: torch.Tensor,
                mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, N, D), boxes (B, N, 4) pixels, image_size (B, 2) -> (states (B,N,H), pooled (B,H))."""
        geometry = relative_box_geometry(boxes, image_size)
        states = self.dropout(self.norm(self.feature(features) + self.geometry(geometry)))
        return states, masked_mean(self.pool_mlp(states), mask)


@ENCODERS.register("small_text_transformer")
class TextEncoder(nn.Module):
    """Token + position embeddings and a pre-LN Transformer encoder (SDPA inside)."""

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int = 2, num_heads: int = 4,
                 max_length: int = 128, dropout: float = 0.1, pad_id: int = 0) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_id)
        self.positions = nn.Embedding(max_length, hidden_size)
        self.max_length = max_length
        layer = nn.TransformerEncoderLayer(hidden_size, num_heads, hidden_size * 4, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        # num_layers 0: no Transformer, the pooled vector is a bag of (position-aware) embeddings
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False) if num_layers > 0 else None
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids, mask (..., L) -> (states (..., L, H), pooled (..., H)); any leading dims."""
        lead = input_ids.shape[:-1]
        ids = input_ids.reshape(-1, input_ids.shape[-1])[:, : self.max_length]
        flat_mask = mask.reshape(-1, mask.shape[-1])[:, : self.max_length].bool()
        # rows with no real token (padding choices/captions) would make attention NaN
        flat_mask = flat_mask | (~flat_mask.any(dim=1, keepdim=True) & F.one_hot(
            torch.zeros(len(ids), dtype=torch.long, device=ids.device), ids.shape[1]).bool())
        positions = torch.arange(ids.shape[1], device=ids.device)
        states = self.tokens(ids) + self.positions(positions)[None]
        if self.encoder is not None:
            states = self.encoder(states, src_key_padding_mask=~flat_mask)
        states = self.norm(states)
        pooled = masked_mean(states, flat_mask)
        return states.view(*lead, ids.shape[1], -1), pooled.view(*lead, -1)
