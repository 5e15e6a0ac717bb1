"""attention_fusion: outputs per task, padding, images refused, and that the text picks the region."""

import pytest
import torch

from vlfw.data.batch import Sample, collate
from vlfw.errors import ConfigError
from vlfw.losses.standard import CrossEntropy
from vlfw.registry import MODELS
from vlfw.testing import task_info

CONFIG = {"hidden_size": 32, "text_layers": 1, "text_heads": 2, "vocab_size": 100, "context_heads": 2}


def build(infos, feature_size=6, **config):
    return MODELS.get("attention_fusion")({**CONFIG, **config},
                                          {d: task_info(dataset=d, visual="regions", region_feature_size=feature_size, **f)
                                           for d, f in infos.items()})


def regions(n, d=6):
    return dict(region_features=torch.randn(n, d), region_boxes=torch.tensor([[0.0, 0.0, 8.0, 8.0]]).repeat(n, 1),
                image_size=torch.tensor([32.0, 32.0]))


def test_outputs_of_every_task_it_provides():
    model = build({"vqa2": {"task": "vqa", "num_answers": 7}, "nlvr2": {"task": "nlvr2", "num_labels": 2},
                   "refcoco": {"task": "rec"}, "snli_ve": {"task": "classification", "num_labels": 3}})
    vqa = collate([Sample(index=i, input_ids=torch.randint(1, 100, (4 + i,)), **regions(3 + i)) for i in range(3)], "vqa2")
    assert model(vqa)["logits"].shape == (3, 7)
    assert model(collate([Sample(index=0, input_ids=torch.randint(1, 100, (4,)), **regions(3))], "snli_ve"))[
        "logits"].shape == (1, 3)
    pair = [Sample(index=i, input_ids=torch.randint(1, 100, (5,)), region_features=torch.randn(2, 3, 6),
                   region_boxes=torch.rand(2, 3, 4) * 8, region_mask=torch.ones(2, 3, dtype=torch.bool),
                   image_size=torch.full((2, 2), 32.0)) for i in range(2)]
    assert model(collate(pair, "nlvr2"))["logits"].shape == (2, 2)
    rec = collate([Sample(index=i, input_ids=torch.randint(1, 100, (4,)), **regions(2 + i)) for i in range(2)], "refcoco")
    assert model(rec)["region_logits"].shape == (2, 3)


@pytest.mark.parametrize("count_glimpses,extra", [(0, {}), (2, {}),
                                                  (4, {"region_mlp": 1, "text_layers": 0, "context_layers": 0}),
                                                  (4, {"region_mlp": 1, "text_layers": 0, "context_layers": 0,
                                                       "glimpse_boxes": True}),
                                                  (4, {"region_mlp": 1, "text_layers": 0, "context_layers": 0,
                                                       "glimpse_boxes": True, "text_queries": True})])
def test_padding_regions_change_nothing(count_glimpses, extra):
    """Padded regions and padded tokens (a longer question in the batch) change no logit."""
    model = build({"vqa2": {"task": "vqa", "num_answers": 5}}, dropout=0.0, count_glimpses=count_glimpses, **extra).eval()
    ids = torch.randint(1, 100, (5,))
    alone = Sample(index=0, input_ids=ids, **regions(2))
    longer = Sample(index=1, input_ids=torch.randint(1, 100, (9,)), **regions(6))
    with torch.no_grad():
        single = model(collate([alone], "vqa2"))["logits"]
        padded = model(collate([alone, longer], "vqa2"))["logits"][:1]
    torch.testing.assert_close(single, padded, rtol=1e-5, atol=1e-5)


def test_images_are_refused_with_a_hint():
    with pytest.raises(ConfigError, match="attention_fusion reads region features.*visual=regions"):
        MODELS.get("attention_fusion")(CONFIG, {"vqa2": task_info(dataset="vqa2", task="vqa", num_answers=3,
                                                                  visual="images")})


def test_the_text_chooses_the_region():
    """Four regions, each one-hot in one of four 'colour' dimensions and tagged by its 'shape' in
    another four; the question names a shape (token 10 + shape), the answer is that region's
    colour. Pooling without the question cannot tell which colour is asked for (every image holds
    every colour once)."""
    torch.manual_seed(0)
    model = build({"toy": {"task": "classification", "num_labels": 4}}, feature_size=8, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = CrossEntropy()

    def make_batch(size=32):
        samples = []
        for i in range(size):
            colours, shapes = torch.randperm(4), torch.randperm(4)
            features = torch.cat([torch.eye(4)[colours], torch.eye(4)[shapes]], dim=1)
            asked = int(torch.randint(0, 4, ()))
            label = colours[(shapes == asked).nonzero()[0, 0]]
            samples.append(Sample(index=i, input_ids=torch.tensor([1, 10 + asked, 2]), region_features=features,
                                  region_boxes=torch.rand(4, 4) * 8, image_size=torch.tensor([32.0, 32.0]), label=label))
        return collate(samples, "toy")

    for _ in range(300):
        batch = make_batch()
        loss = loss_fn(batch, model(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    batch = make_batch(256)
    with torch.no_grad():
        accuracy = (model(batch)["logits"].argmax(1) == batch.label).float().mean().item()
    assert accuracy > 0.9  # chance: 0.25


def test_box_summary_of_a_box():
    from vlfw.models.attention import box_summary

    out = box_summary(torch.tensor([[[8.0, 4.0, 24.0, 12.0]]]), torch.tensor([[32.0, 16.0]]))
    torch.testing.assert_close(out[0, 0], torch.tensor([0.25, 0.25, 0.75, 0.75, 0.5, 0.5, 0.5, 0.5, 0.25]))


def test_glimpse_boxes_carry_where_the_glimpse_looked():
    """With glimpse_boxes the attended boxes reach the output through their own path: zeroing
    that path's last layer gives the model without it, and moving the boxes then changes nothing
    but the region encoder's input."""
    torch.manual_seed(0)
    model = build({"nlvr2": {"task": "nlvr2", "num_labels": 2}}, dropout=0.0, glimpse_boxes=True, region_mlp=1,
                  text_layers=0, context_layers=0, count_glimpses=2).eval()
    pair = [Sample(index=i, input_ids=torch.randint(1, 100, (5,)), region_features=torch.randn(2, 3, 6),
                   region_boxes=torch.rand(2, 3, 4) * 8, region_mask=torch.ones(2, 3, dtype=torch.bool),
                   image_size=torch.full((2, 2), 32.0)) for i in range(2)]
    batch = collate(pair, "nlvr2")
    with torch.no_grad():
        states, mask = model.visual_states(batch, model.encode_text(batch.input_ids, batch.attention_mask))
        text = model.encode_text(batch.input_ids, batch.attention_mask).repeat_interleave(2, dim=0)
        from vlfw.models.attention import box_summary

        boxes = box_summary(batch.region_boxes.reshape(-1, 3, 4), batch.image_size.reshape(-1, 2))
        with_boxes = model.attention(text, states, mask, boxes)
        moved = model.attention(text, states, mask, boxes.flip(1))
        assert (with_boxes - moved).abs().amax() > 1e-4  # the glimpses' boxes enter the output
        torch.nn.init.zeros_(model.attention.where[-1].weight)
        torch.nn.init.zeros_(model.attention.where[-1].bias)
        torch.testing.assert_close(model.attention(text, states, mask, boxes), model.attention(text, states, mask, boxes.flip(1)))


def test_text_queries_tell_which_object_is_which():
    """Two regions, each one-hot in one of four 'colour' dimensions; the statement names two
    colours (tokens 10 + c) and is true when the first-named one is on the left. Both orders of
    the two words make the same bag of words, so only a model that reads which word came first
    can tell a true statement from its swap; text_queries give each glimpse its own attention
    over the position-aware token states."""

    def make_batch(size, generator):
        samples = []
        for i in range(size):
            colours = torch.randperm(4, generator=generator)[:2]
            features = torch.cat([torch.eye(4)[colours], torch.zeros(2, 2)], dim=1)
            left = int(torch.randint(0, 2, (), generator=generator))
            x = torch.tensor([2.0, 20.0]) if left == 0 else torch.tensor([20.0, 2.0])
            boxes = torch.stack([x, torch.full((2,), 4.0), x + 8, torch.full((2,), 12.0)], dim=1)
            order = torch.randperm(2, generator=generator)
            label = int(order[0] == left)  # the first-named region is the left one
            samples.append(Sample(index=i, input_ids=torch.tensor([1, 10 + int(colours[order[0]]), 3,
                                                                   10 + int(colours[order[1]]), 2]),
                                  region_features=features, region_boxes=boxes,
                                  image_size=torch.tensor([32.0, 32.0]), label=torch.tensor(label)))
        return collate(samples, "toy")

    def accuracy(text_queries):
        torch.manual_seed(0)
        model = build({"toy": {"task": "classification", "num_labels": 2}}, dropout=0.0, region_mlp=1,
                      text_layers=0, context_layers=0, glimpses=2, glimpse_boxes=True, text_queries=text_queries)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        generator = torch.Generator().manual_seed(0)
        for _ in range(300):
            batch = make_batch(32, generator)
            loss = CrossEntropy()(batch, model(batch))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        batch = make_batch(512, torch.Generator().manual_seed(1))
        with torch.no_grad():
            return (model.eval()(batch)["logits"].argmax(1) == batch.label).float().mean().item()

    assert accuracy(True) > 0.9
    assert accuracy(False) < 0.7  # the pooled text alone: near chance (0.5)
