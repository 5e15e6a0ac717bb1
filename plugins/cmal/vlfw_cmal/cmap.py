"""CMAP (cross-modal associative prompt): the hybrid sequence `[CLS] regions [SEP] words` with one
anchor's two slots masked and, with probability `swap_probability`, filled with each other's
UMSE state; then position, modality type and feature each through an FC, summed, LayerNorm.

Anchors come from the batch (vlfw.processors.anchors: `anchor_region_index`,
`anchor_token_index`, `anchor_token_mask`, `anchor_mask`). Scanning: `each` makes one hybrid
sequence per anchor (each anchor masked once, one at a time), `one` one sequence per sample with
one random anchor, `none` no anchor (downstream tasks). A sample without anchors still gives one
sequence, with nothing masked or swapped, for the other objectives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

SCAN_MODES = ("each", "one", "none")
VISUAL_TYPE, TEXTUAL_TYPE = 0, 1


@dataclass
class HybridSequence:
    """R rows (hybrid sequences) of S = 1 + N + 1 + (L - 1) slots.

    `features` (R, S, H): the slot contents before the CMAP FCs (what the tests read);
    `embeddings` (R, S, H): the CMAP output fed to CMAI; `mask` (R, S) bool; `rows` (R,): the
    batch sample of each row; `anchor` (R,): the anchor index in the sample (-1: none);
    `region_index` / `token_index` (R,): the anchor's region and first token (-1: none);
    `region_slot` / `word_slot` (R,): their slots in the sequence (-1: none); `masked` /
    `swapped` (R,) bool; `num_regions` N.
    """

    features: torch.Tensor
    embeddings: torch.Tensor | None
    mask: torch.Tensor
    rows: torch.Tensor
    anchor: torch.Tensor
    region_index: torch.Tensor
    token_index: torch.Tensor
    region_slot: torch.Tensor
    word_slot: torch.Tensor
    masked: torch.Tensor
    swapped: torch.Tensor
    num_regions: int

    def region_slots(self) -> slice:
        return slice(1, 1 + self.num_regions)

    def word_slots(self) -> slice:
        """Slots of tokens 1 .. L - 1 (slot of token j: num_regions + 1 + j)."""
        return slice(self.num_regions + 2, None)


def scan_anchors(anchor_mask: torch.Tensor | None, batch_size: int, mode: str = "each", max_per_sample: int | None = None,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, anchor) of the hybrid sequences: the sample and the anchor index (-1: none) of each.

    `each`: one row per anchor, in a random order (at most `max_per_sample`, a random subset);
    `one`: one row per sample with one random anchor; `none`: one row per sample, no anchor.
    Every sample gets at least one row.
    """
    if mode not in SCAN_MODES:
        raise ValueError(f"anchor scan mode must be one of {', '.join(SCAN_MODES)}, got {mode!r}")
    rows: list[int] = []
    anchors: list[int] = []
    for sample in range(batch_size):
        valid = [] if anchor_mask is None or mode == "none" else anchor_mask[sample].nonzero().flatten().tolist()
        if not valid:
            rows.append(sample)
            anchors.append(-1)
            continue
        order = [valid[k] for k in torch.randperm(len(valid), generator=generator).tolist()]
        if mode == "one":
            order = order[:1]
        elif max_per_sample is not None:
            order = order[:max(1, int(max_per_sample))]
        rows += [sample] * len(order)
        anchors += order
    return torch.tensor(rows, dtype=torch.long), torch.tensor(anchors, dtype=torch.long)


class CrossModalAssociativePrompt(nn.Module):
    """Builds the hybrid sequences from the two UMSE outputs and the batch's anchors.

    Params: `hidden_size`, `max_positions` (of the hybrid sequence), `mask_probability` (1.0:
    an anchor's slots are always masked), `swap_probability` (0.6: a masked anchor's slots are
    filled with each other's UMSE state), `scan` (each | one | none), `max_anchors_per_sample`.
    The other tokens of a multi-token anchored word (word pieces, the rest of a phrase) are
    masked with its slot, so the word cannot be read off its remaining pieces.
    """

    def __init__(self, hidden_size: int, max_positions: int = 512, mask_probability: float = 1.0,
                 swap_probability: float = 0.6, scan: str = "each", max_anchors_per_sample: int | None = None,
                 dropout: float = 0.1, layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        for name, value in (("mask_probability", mask_probability), ("swap_probability", swap_probability)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"cmap: {name} must be in [0, 1], got {value}")
        if scan not in SCAN_MODES:
            raise ValueError(f"cmap: scan must be one of {', '.join(SCAN_MODES)}, got {scan!r}")
        self.mask_probability = float(mask_probability)
        self.swap_probability = float(swap_probability)
        self.scan = scan
        self.max_anchors_per_sample = max_anchors_per_sample
        self.cls_embedding = nn.Parameter(torch.randn(hidden_size) * 0.02)
        self.sep_embedding = nn.Parameter(torch.randn(hidden_size) * 0.02)
        self.mask_embedding = nn.Parameter(torch.randn(hidden_size) * 0.02)
        self.positions = nn.Embedding(max_positions, hidden_size)
        self.types = nn.Embedding(2, hidden_size)
        self.position_fc = nn.Linear(hidden_size, hidden_size)
        self.type_fc = nn.Linear(hidden_size, hidden_size)
        self.feature_fc = nn.Linear(hidden_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def build(self, visual_states: torch.Tensor, visual_mask: torch.Tensor, text_states: torch.Tensor,
              text_mask: torch.Tensor, anchor_region_index: torch.Tensor | None = None,
              anchor_token_index: torch.Tensor | None = None, anchor_token_mask: torch.Tensor | None = None,
              anchor_mask: torch.Tensor | None = None, scan: str | None = None,
              generator: torch.Generator | None = None) -> HybridSequence:
        """The hybrid slot contents (`features`), without the CMAP FCs (`embeddings` is None).

        visual_states (B, 1 + N, H) and text_states (B, L, H) are the UMSE outputs (position 0:
        [IMG] / [TXT], left out of the hybrid sequence); the anchor fields as collated.
        """
        batch, length = text_states.shape[:2]
        num_regions = visual_states.shape[1] - 1
        device = visual_states.device
        scan = self.scan if scan is None else scan
        rows, anchor = scan_anchors(None if anchor_mask is None else anchor_mask.cpu(), batch, scan,
                                    self.max_anchors_per_sample, generator)
        count = len(rows)
        has_anchor = anchor >= 0
        safe = anchor.clamp(min=0)
        region_index = torch.full((count,), -1, dtype=torch.long)
        token_index = torch.full((count,), -1, dtype=torch.long)
        if bool(has_anchor.any()):
            region_index[has_anchor] = anchor_region_index.cpu()[rows, safe][has_anchor]
            token_index[has_anchor] = anchor_token_index.cpu()[rows, safe][has_anchor]
        draws = torch.rand(count, 2, generator=generator)
        masked = has_anchor & (draws[:, 0] < self.mask_probability)
        swapped = masked & (draws[:, 1] < self.swap_probability)

        rows_d = rows.to(device)
        hidden = visual_states.shape[-1]
        special = lambda vector: vector.to(visual_states.dtype).expand(count, 1, hidden)
        features = torch.cat([special(self.cls_embedding), visual_states[rows_d, 1:], special(self.sep_embedding),
                              text_states[rows_d, 1:]], dim=1)
        mask = torch.cat([torch.ones(count, 1, dtype=torch.bool, device=device), visual_mask[rows_d, 1:].bool(),
                          torch.ones(count, 1, dtype=torch.bool, device=device), text_mask[rows_d, 1:].bool()], dim=1)
        region_slot = torch.where(has_anchor, 1 + region_index, -1)
        word_slot = torch.where(has_anchor, num_regions + 1 + token_index, -1)

        if bool(masked.any()):
            features = features.clone()
            picked = masked.nonzero().flatten()
            picked_d = picked.to(device)
            mask_vector = self.mask_embedding.to(features.dtype)
            if anchor_token_mask is not None:  # the rest of the word: masked with it, never swapped
                tokens = anchor_token_mask.to(device)[rows_d[picked_d], safe.to(device)[picked_d]]  # (P, L)
                word_rows, word_tokens = tokens[:, 1:].nonzero(as_tuple=True)
                features[picked_d[word_rows], num_regions + 2 + word_tokens] = mask_vector
            r_slots, w_slots = region_slot.to(device)[picked_d], word_slot.to(device)[picked_d]
            features[picked_d, r_slots] = mask_vector
            features[picked_d, w_slots] = mask_vector
            swap = swapped[picked].to(device)
            if bool(swap.any()):
                samples = rows_d[picked_d][swap]
                regions, tokens_j = region_index.to(device)[picked_d][swap], token_index.to(device)[picked_d][swap]
                features[picked_d[swap], r_slots[swap]] = text_states[samples, tokens_j]
                features[picked_d[swap], w_slots[swap]] = visual_states[samples, 1 + regions]
        return HybridSequence(features=features, embeddings=None, mask=mask, rows=rows_d, anchor=anchor.to(device),
                              region_index=region_index.to(device), token_index=token_index.to(device),
                              region_slot=region_slot.to(device), word_slot=word_slot.to(device),
                              masked=masked.to(device), swapped=swapped.to(device), num_regions=num_regions)

    def embed(self, hybrid: HybridSequence) -> HybridSequence:
        """LayerNorm(FC(position) + FC(modality type) + FC(feature)) of each slot."""
        count, slots = hybrid.features.shape[:2]
        if slots > self.positions.num_embeddings:
            raise ValueError(f"cmap: a hybrid sequence of {slots} slots is longer than max_positions "
                             f"{self.positions.num_embeddings}")
        device = hybrid.features.device
        # positions count the sample's own slots, as if the sequence were packed: [CLS] 0, its real
        # regions 1..n, [SEP] n + 1, word j n + 2 + j; so a sample's positions do not depend on how
        # many regions the other samples of the batch have (padded region slots take 0; masked)
        slot = torch.arange(slots, device=device)
        first_word_side = 1 + hybrid.num_regions  # the [SEP] slot
        real_regions = hybrid.mask[:, 1:first_word_side].sum(1, keepdim=True)  # (count, 1)
        index = torch.where(slot[None] >= first_word_side, slot[None] - hybrid.num_regions + real_regions,
                            slot[None].expand(count, -1))
        index = index.masked_fill(~hybrid.mask & (slot[None] < first_word_side), 0)
        positions = self.positions(index)
        types = torch.full((slots,), TEXTUAL_TYPE, dtype=torch.long, device=device)
        types[: 1 + hybrid.num_regions] = VISUAL_TYPE  # [CLS] and the region slots; [SEP] opens the words
        summed = self.feature_fc(hybrid.features) + self.position_fc(positions) + self.type_fc(self.types(types))[None]
        hybrid.embeddings = self.dropout(self.norm(summed))
        return hybrid

    def forward(self, visual_states: torch.Tensor, visual_mask: torch.Tensor, text_states: torch.Tensor,
                text_mask: torch.Tensor, anchor_region_index: torch.Tensor | None = None,
                anchor_token_index: torch.Tensor | None = None, anchor_token_mask: torch.Tensor | None = None,
                anchor_mask: torch.Tensor | None = None, scan: str | None = None,
                generator: torch.Generator | None = None) -> HybridSequence:
        return self.embed(self.build(visual_states, visual_mask, text_states, text_mask, anchor_region_index,
                                     anchor_token_index, anchor_token_mask, anchor_mask, scan, generator))
