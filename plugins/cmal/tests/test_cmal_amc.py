import pytest
import torch

from vlfw.testing import shapes_builder
from vlfw_cmal import (
    CrossModalAssociativeClassifier,
    CrossModalAssociativeInteraction,
    CrossModalAssociativePrompt,
    TextualUMSE,
    VisualUMSE,
    amc_loss,
    amc_targets,
)

HIDDEN = 32


@pytest.fixture(scope="module")
def batch_and_info(shapes_tiny_root):
    builder = shapes_builder("cmal_coco_captions")
    dataset = builder.build("train")
    return builder.collate([dataset[i] for i in range(8)]), builder.task_info(), builder


class TinyCMAL(torch.nn.Module):
    def __init__(self, info, swap_probability=1.0):
        super().__init__()
        self.visual = VisualUMSE(info.region_feature_size, HIDDEN, num_heads=4, dropout=0.0)
        self.text = TextualUMSE(info.text.vocab_size, HIDDEN, num_heads=4, max_length=64, dropout=0.0)
        self.cmap = CrossModalAssociativePrompt(HIDDEN, swap_probability=swap_probability, dropout=0.0)
        self.cmai = CrossModalAssociativeInteraction(HIDDEN, num_layers=2, num_heads=4, dropout=0.0)
        self.cmac = CrossModalAssociativeClassifier(HIDDEN, info.text.vocab_size, info.detector_classes)

    def forward(self, batch, generator):
        visual, visual_mask = self.visual(batch.region_features, batch.region_boxes, batch.image_size, batch.region_mask)
        text, text_mask = self.text(batch.input_ids, batch.attention_mask)
        hybrid = self.cmap(visual, visual_mask, text, text_mask, batch.anchor_region_index, batch.anchor_token_index,
                           batch.anchor_token_mask, batch.anchor_mask, generator=generator)
        states = self.cmai(hybrid.embeddings, hybrid.mask)
        rows, words, regions = amc_targets(hybrid, batch.input_ids, batch.region_class_probs)
        word_logits, region_logits = self.cmac(states, hybrid, rows)
        return hybrid, rows, words, regions, amc_loss(word_logits, region_logits, words, regions)


def test_amc_targets_are_each_slots_own_identity(batch_and_info):
    batch, info, builder = batch_and_info
    torch.manual_seed(0)
    model = TinyCMAL(info)
    hybrid, rows, words, regions, losses = model(batch, torch.Generator().manual_seed(0))
    assert len(rows) == int(batch.anchor_mask.sum()) > 0  # mask probability 1: every scanned anchor
    for row, word, region in zip(rows.tolist(), words.tolist(), regions.tolist()):
        b = int(hybrid.rows[row])
        assert word == int(batch.input_ids[b, hybrid.token_index[row]])  # the word j itself ...
        names = info.detector_class_names
        assert names[region] != "__background__"  # ... and region i's own (non-background) class
        assert region == int(batch.region_class_probs[b, hybrid.region_index[row]].argmax())
        tokens = batch.anchor_token_mask[b, hybrid.anchor[row]]
        assert builder.anchor_processor.thesaurus.normalise(builder.text_processor.decode(
            batch.input_ids[b][tokens])) == names[region]
    assert all(torch.isfinite(v) for v in losses.values())


def test_amc_is_learnable_on_one_batch(batch_and_info):
    batch, info, _ = batch_and_info
    torch.manual_seed(0)
    model = TinyCMAL(info)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for step in range(60):
        *_, losses = model(batch, torch.Generator().manual_seed(step))
        loss = losses["amc_word"] + losses["amc_region"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((losses["amc_word"].item(), losses["amc_region"].item()))
    first, last = history[0], [sum(h[k] for h in history[-5:]) / 5 for k in (0, 1)]
    assert last[0] < 0.3 * first[0] and last[1] < 0.3 * first[1], (first, last)


def test_no_masked_anchor_gives_a_zero_loss_with_a_graph():
    word_logits = torch.zeros(0, 5, requires_grad=True)
    region_logits = torch.zeros(0, 3, requires_grad=True)
    losses = amc_loss(word_logits, region_logits, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert losses["amc_word"].item() == 0.0 and losses["amc_word"].requires_grad
