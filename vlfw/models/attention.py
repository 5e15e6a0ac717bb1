"""The core's "reads the image" baseline: question-guided attention over regions or grid cells.

The late-fusion baseline pools the image before it sees the text, so a question about one object
must be answered from a summary of all of them. This model lets the text choose what to look at,
in the manner of bottom-up/top-down attention VQA models (Anderson et al., 2018): every region
(or CNN grid cell) state is scored against the text with `glimpses` attention heads, the attended
vectors are fused with the text, and the heads of vlfw read the result. Region states first pass
`context_layers` Transformer layers over the text vector and the regions together (relations
such as "left of the blue square" need the other regions, and which ones matter depends on the
text), and for REC / grounding each region's state is fused with the text before the region scorer.
`count_glimpses` adds soft counts; `glimpse_boxes` adds where each glimpse looked (its
attention-weighted box summary), which relations and absence need; `text_queries` gives every
glimpse and count gate its own attention over the words, so that two glimpses can look for the
two objects a statement names, in the order it names them (docs/learning.md).

It reuses the late-fusion model's encoders (text Transformer, region MLP, the feature
normalisation), so the two differ only in where the text enters. Region features only
(visual=regions): on images use late_fusion or a paper model.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from vlfw.data.batch import Batch
from vlfw.errors import ConfigError
from vlfw.models.base import provides
from vlfw.models.baselines import LateFusionModel, _Fusion
from vlfw.processors.boxes import relative_box_geometry
from vlfw.registry import MODELS
from vlfw.tasks import TaskInfo

_DEFAULTS = {**LateFusionModel.DEFAULT_CONFIG, "glimpses": 2, "count_glimpses": 0, "context_layers": 1,
             "context_heads": 4, "region_mlp": 0, "glimpse_boxes": False, "text_queries": False}

# what each softmax glimpse adds about where it looked (glimpse_boxes): the attention-weighted
# x1, y1, x2, y2 (fractions of the image), centre, width, height and area
BOX_SUMMARY = 9


def box_summary(boxes: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """boxes (B, N, 4) in pixels, sizes (B, 2) = (width, height) -> (B, N, BOX_SUMMARY)."""
    geometry = relative_box_geometry(boxes, sizes)
    xyxy, wh = geometry[..., :4], geometry[..., 4:6].clamp(min=0)
    centre = (xyxy[..., :2] + xyxy[..., 2:]) / 2
    return torch.cat([xyxy, centre, wh, wh[..., :1] * wh[..., 1:]], dim=-1)


class _TextGuidedAttention(nn.Module):
    """`glimpses` softmax attention distributions over N states, each guided by the text vector,
    and `count_glimpses` sigmoid gates whose sums over the regions (soft counts of the regions the
    text selects) can count and tell whether something exists: a softmax average cannot, it is
    the same for one red star and for three. The counts enter through a small MLP."""

    def __init__(self, hidden: int, glimpses: int, dropout: float, count_glimpses: int = 0,
                 glimpse_boxes: bool = False, text_queries: bool = False) -> None:
        super().__init__()
        self.glimpses, self.count_glimpses = glimpses, count_glimpses
        self.glimpse_boxes, self.text_queries = glimpse_boxes, text_queries
        queries = glimpses + count_glimpses
        self.text = nn.Linear(hidden, hidden)
        self.state = nn.Linear(hidden, hidden)
        if text_queries:
            # one query per glimpse and per count gate, each its own attention over the words
            # (position-aware token states), added to the pooled text: "the red circle is left of
            # the blue square" needs one glimpse on each object, and the pooled bag of words is the
            # same for both orders of the two objects
            self.word_scores = nn.Linear(hidden, queries)
            self.word_values = nn.Linear(hidden, hidden)
            self.query_scores = nn.Parameter(torch.empty(queries, hidden).normal_(std=hidden ** -0.5))
            self.query_bias = nn.Parameter(torch.zeros(queries))
            self.score_dropout = nn.Dropout(dropout)
        else:
            self.score = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, queries))
        self.out = nn.Linear(glimpses * hidden + (hidden if count_glimpses else 0), hidden)
        if glimpse_boxes:
            # where the glimpses looked, and their relations (left of, bigger than, next to),
            # through an MLP of the glimpses' box summaries; added to the output
            self.where = nn.Sequential(nn.Linear(glimpses * BOX_SUMMARY, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        if count_glimpses:
            self.counts = nn.Sequential(nn.Linear(count_glimpses, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def scores(self, text: torch.Tensor, states: torch.Tensor,
               words: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """The glimpses' and count gates' logits over the states: (B, N, G + C)."""
        if not self.text_queries:
            return self.score(self.state(states) * self.text(text)[:, None])
        if words is None:
            raise ConfigError("attention_fusion: text_queries needs the text's token states")
        tokens, token_mask = words  # (B, T, H), (B, T) True = real
        weights = self.word_scores(tokens).masked_fill(~token_mask[..., None].bool(), torch.finfo(tokens.dtype).min)
        attended = torch.einsum("btq,bth->bqh", weights.softmax(dim=1), self.word_values(tokens))
        queries = self.text(text)[:, None] + attended  # (B, Q, H)
        joint = nn.functional.gelu(self.state(states)[:, :, None] * queries[:, None])  # (B, N, Q, H)
        return torch.einsum("bnqh,qh->bnq", self.score_dropout(joint), self.query_scores) + self.query_bias

    def forward(self, text: torch.Tensor, states: torch.Tensor, mask: torch.Tensor | None,
                boxes: torch.Tensor | None = None,
                words: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """text (B, H), states (B, N, H), mask (B, N) True = real -> attended (B, H);
        boxes (B, N, BOX_SUMMARY): the regions' box summaries (glimpse_boxes); words: the
        token states (B, T, H) and their mask (text_queries)."""
        logits = self.scores(text, states, words)  # (B, N, G + C)
        soft, gate = logits[..., :self.glimpses], logits[..., self.glimpses:]
        if mask is not None:
            soft = soft.masked_fill(~mask[..., None].bool(), torch.finfo(soft.dtype).min)
        weights = soft.softmax(dim=1)
        parts = [torch.einsum("bng,bnh->bgh", weights, states).flatten(1)]
        if self.count_glimpses:
            gates = gate.sigmoid()
            if mask is not None:
                gates = gates * mask[..., None].to(gates.dtype)
            parts.append(self.counts(gates.sum(dim=1)))
        out = self.out(torch.cat(parts, dim=-1))
        if self.glimpse_boxes:
            if boxes is None:
                raise ConfigError("attention_fusion: glimpse_boxes needs the batch's region_boxes and image_size")
            out = out + self.where(torch.einsum("bng,bnk->bgk", weights, boxes.to(weights.dtype)).flatten(1))
        return out


@MODELS.register("attention_fusion")
class AttentionFusionModel(LateFusionModel):
    """Text-guided attention over region (or grid-cell) states; see the module docstring."""

    DEFAULT_CONFIG = _DEFAULTS
    VISUAL_INPUTS = ("regions",)

    def __init__(self, config, task_infos: Mapping[str, TaskInfo]) -> None:
        super().__init__(config, task_infos)
        on_images = sorted(name for name, info in self.task_infos.items() if info.visual != "regions")
        if on_images:
            raise ConfigError(f"attention_fusion reads region features; set dataset_config.<d>.visual=regions for "
                              f"{on_images} (or use late_fusion)")
        c = self.config
        hidden, dropout = int(c.hidden_size), float(c.dropout)
        layers = int(c.context_layers)
        if layers > 0:
            layer = nn.TransformerEncoderLayer(hidden, int(c.context_heads), 4 * hidden, dropout, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.context = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        else:
            self.context = None
        # region_mlp: residual per-region MLPs on the region states, so each state can hold the
        # conjunction of its attributes (a red star) before the text scores it; the states of the
        # region encoder are a linear map of the features
        self.region_mlp = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden))
            for _ in range(int(c.get("region_mlp", 0) or 0)))
        self.attention = _TextGuidedAttention(hidden, int(c.glimpses), dropout, int(c.count_glimpses),
                                              bool(c.get("glimpse_boxes", False)), bool(c.get("text_queries", False)))
        self.region_fusion = _Fusion(hidden, dropout)

    def visual_states(self, batch: Batch, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text-aware region states (B', N, H) and mask (B', N) or None; B' = B x images per sample."""
        _, states = self.encode_visual(batch)
        states = states.reshape(-1, *states.shape[-2:])
        mask = batch.get("region_mask")
        mask = mask.reshape(-1, mask.shape[-1]).bool() if mask is not None else None
        for mlp in self.region_mlp:
            states = states + mlp(states)
        if self.context is not None:
            images = states.shape[0] // text.shape[0]
            query = text.repeat_interleave(images, dim=0)[:, None] if images > 1 else text[:, None]
            padding = None if mask is None else torch.cat([mask.new_zeros(len(mask), 1), ~mask], dim=1)
            states = self.context(torch.cat([query, states], dim=1), src_key_padding_mask=padding)[:, 1:]
        return states, mask

    def attend(self, batch: Batch) -> tuple[torch.Tensor, int]:
        """The fused (text, attended image) vector per image (B', H), and the images per sample."""
        tokens, text = self.text_encoder(batch.input_ids, batch.attention_mask)
        states, mask = self.visual_states(batch, text)
        images = states.shape[0] // text.shape[0]
        repeat = (lambda t: t.repeat_interleave(images, dim=0)) if images > 1 else (lambda t: t)  # noqa: E731
        text = repeat(text)
        boxes = words = None
        if self.attention.glimpse_boxes:
            boxes = box_summary(batch.region_boxes.reshape(-1, *batch.region_boxes.shape[-2:]).float(),
                                batch.image_size.reshape(-1, 2))
        if self.attention.text_queries:
            words = (repeat(tokens), repeat(batch.attention_mask[:, :tokens.shape[1]].bool()))
        return self.fusion(text, self.attention(text, states, mask, boxes, words)), images

    @provides("vqa", "classification", features=("pooled",))
    def pooled_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"pooled": self.attend(batch)[0]}

    @provides("nlvr2", features=("pooled_pair",))
    def pair_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        fused, images = self.attend(batch)
        return {"pooled_pair": fused.view(-1, images * fused.shape[-1])}

    @provides("rec", "grounding", features=("region_states",))
    def region_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        t = self.encode_text(batch.input_ids, batch.attention_mask)
        states, _ = self.visual_states(batch, t)
        return {"region_states": self.region_fusion(t[:, None].expand_as(states), states)}
