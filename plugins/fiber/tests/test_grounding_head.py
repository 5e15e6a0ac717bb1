"""FPN, language-aware dense head, post-processing and a tiny overfitting run of GroundingHead."""

import time

import pytest
import torch

from vlfw.processors.boxes import box_iou
from vlfw_fiber import grounding

IN_CHANNELS = [8, 16, 24]
STRIDES = (8, 16, 32)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # the GPU too where there is one


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _maps(batch=2, size=128, seed=0, device="cpu"):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, size // s, size // s, generator=generator).to(device) for c, s in zip(IN_CHANNELS, STRIDES)]


def _tiny_head(**kwargs):
    torch.manual_seed(0)
    return grounding.GroundingHead(IN_CHANNELS, text_dim=16, width=32, num_convs=1, strides=STRIDES, **kwargs)


def test_feature_pyramid_levels_and_strides():
    pyramid = grounding.FeaturePyramid(IN_CHANNELS, width=32, strides=STRIDES, p6p7=True)
    levels = pyramid(_maps())
    assert pyramid.strides == (8, 16, 32, 64, 128)
    assert [tuple(level.shape) for level in levels] == [(2, 32, 16, 16), (2, 32, 8, 8), (2, 32, 4, 4), (2, 32, 2, 2),
                                                        (2, 32, 1, 1)]
    assert grounding.FeaturePyramid([8, 16, 24, 32]).strides == (4, 8, 16, 32)  # Swin stage strides by default
    with pytest.raises(ValueError, match=r"image map 1 must be \[B, 16, H, W\]"):
        pyramid([torch.zeros(1, 8, 4, 4), torch.zeros(1, 4, 4, 16), torch.zeros(1, 24, 1, 1)])


def test_level_locations_are_cell_centres_in_pixels():
    xy, strides, levels = grounding.level_locations([(2, 3), (1, 1)], [8, 16])
    assert xy.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12], [8, 8]]
    assert strides.tolist() == [8] * 6 + [16] and levels.tolist() == [0] * 6 + [1]


def test_outputs_shapes_and_positive_distances():
    head = _tiny_head(p6p7=True)
    text = torch.randn(2, 5, 16)
    out = head(_maps(), text, torch.ones(2, 5, dtype=torch.bool))
    locations = 16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1
    assert out["token_logits"].shape == (2, locations, 5)
    assert out["box_distances"].shape == (2, locations, 4) and bool((out["box_distances"] > 0).all())
    assert out["centerness_logits"].shape == (2, locations) and out["locations"].shape == (locations, 2)


def test_token_logit_is_the_scaled_dot_product_and_follows_token_order():
    head = _tiny_head().eval()
    maps, text = _maps(), torch.randn(2, 5, 16)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out = head(maps, text, mask)
    # by hand: the projected, normalised query of each location against each projected token
    levels = head.pyramid(maps)
    queries = torch.cat([head.head.query_projection(head.head.cls_tower(f)).flatten(2).transpose(1, 2) for f in levels], 1)
    tokens = head.head.token_projection(text)
    cosine = torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(tokens, dim=-1).transpose(1, 2)
    expected = cosine * head.head.logit_scale.exp() + head.head.logit_bias
    assert torch.allclose(out["token_logits"][0], expected[0], atol=1e-5)
    assert torch.allclose(out["token_logits"][1, :, :3], expected[1, :, :3], atol=1e-5)
    assert bool((out["token_logits"][1, :, 3:] == grounding.head.MASKED_TOKEN_LOGIT).all())
    permutation = torch.tensor([3, 0, 4, 1, 2])
    permuted = head(maps, text[:, permutation], torch.ones(2, 5, dtype=torch.bool))
    full = head(maps, text, torch.ones(2, 5, dtype=torch.bool))
    assert torch.allclose(permuted["token_logits"], full["token_logits"][:, :, permutation], atol=1e-5)
    assert torch.equal(permuted["box_distances"], full["box_distances"])  # the box branch ignores the text


def test_phrase_scores_are_mean_token_probability_times_centerness():
    logits = torch.tensor([[0.0, 2.0, -2.0], [1.0, -1.0, 3.0]])
    centerness = torch.tensor([0.0, 1.0])
    scores = grounding.phrase_scores(logits, centerness, torch.tensor([[False, True, True], [True, False, False]]))
    expected_0 = (torch.sigmoid(logits[:, 1]) + torch.sigmoid(logits[:, 2])) / 2 * torch.sigmoid(centerness)
    assert torch.allclose(scores[0], expected_0)
    assert torch.allclose(scores[1], torch.sigmoid(logits[:, 0]) * torch.sigmoid(centerness))
    with pytest.raises(ValueError, match="no token"):
        grounding.phrase_scores(logits, centerness, torch.zeros(1, 3, dtype=torch.bool))


def test_prediction_is_clipped_ranked_and_deduplicated():
    locations = torch.tensor([[10.0, 10.0], [12.0, 10.0], [90.0, 50.0], [50.0, 50.0]])
    outputs = {
        "token_logits": torch.tensor([[[4.0, -4.0], [3.0, -4.0], [2.0, 5.0], [-6.0, 1.0]]]),
        "centerness_logits": torch.zeros(1, 4),
        "box_distances": torch.tensor([[[30.0, 5.0, 8.0, 5.0], [32.0, 5.0, 6.0, 5.0], [20.0, 20.0, 40.0, 80.0],
                                        [5.0, 5.0, 5.0, 5.0]]]),
        "locations": locations,
    }
    result = grounding.predict_phrase_boxes(outputs, [torch.tensor([[True, False], [False, True]])], [[100, 60]], k=3,
                                            nms_threshold=0.5)[0]
    assert result["boxes"].shape == (2, 3, 4)
    boxes, valid = result["boxes"], result["valid"]
    real = boxes[valid]
    assert bool((real[:, 0::2] >= 0).all() and (real[:, 0::2] <= 100).all() and (real[:, 1::2] >= 0).all()
                and (real[:, 1::2] <= 60).all())
    # phrase 0: location 0 clipped to (0, 5, 18, 15); location 1 nearly the same box, suppressed by NMS
    assert boxes[0, 0].tolist() == [0.0, 5.0, 18.0, 15.0]
    assert not any(torch.allclose(b, torch.tensor([0.0, 5.0, 18.0, 15.0]), atol=3) for b in boxes[0, 1:][valid[0, 1:]])
    # phrase 1: location 2 first, clipped to the image (70, 30, 100, 60)
    assert boxes[1, 0].tolist() == [70.0, 30.0, 100.0, 60.0]
    assert bool((result["scores"][valid][:-1] >= 0).all()) and bool((result["scores"][~valid] == float("-inf")).all())
    scores = result["scores"][1][valid[1]]
    assert bool((scores[:-1] >= scores[1:]).all())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("assignment", ["fcos", "atss"])
def test_tiny_model_overfits_two_images(assignment, device):
    start = time.perf_counter()
    head = _tiny_head(assignment=assignment).to(device)
    maps = _maps(device=device)
    text = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(1)).to(device)
    mask = torch.ones(2, 6, dtype=torch.bool, device=device)
    mask[1, 5] = False
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0], [70.0, 30.0, 120.0, 70.0]]),
                "positive_map": torch.tensor([[0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 0]], dtype=torch.bool)},
               {"boxes": torch.tensor([[30.0, 30.0, 100.0, 110.0]]),
                "positive_map": torch.tensor([[0, 1, 1, 1, 1, 0]], dtype=torch.bool)}]  # on the CPU: moved by the head
    phrases = [t["positive_map"] for t in targets]
    before = head.predict(head(maps, text, mask), phrases, [[128, 128]] * 2, k=1)
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    first = None
    for _ in range(250):
        losses = head.loss(head(maps, text, mask), targets)
        total = sum(losses.values())
        first = total.item() if first is None else first
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert total.item() < first / 5
    after = head.predict(head(maps, text, mask), phrases, [[128, 128]] * 2, k=1)
    for prediction, old, target in zip(after, before, targets):
        iou = box_iou(prediction["boxes"][:, 0].cpu(), target["boxes"]).diagonal()
        assert bool((iou > 0.5).all()), iou  # each phrase finds ITS box, not the other phrase's
        old_iou = box_iou(old["boxes"][:, 0].cpu(), target["boxes"]).diagonal()
        assert bool((old_iou < 0.5).all()), old_iou  # the untrained head did not
    hits = grounding.rec_hits(after[1]["boxes"][:, 0].cpu(), targets[1]["boxes"])
    assert hits.tolist() == [True]
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_precision_keeps_boxes_and_logits_in_float32(device):
    dtype = torch.float16 if device == "cuda" else torch.bfloat16
    head = _tiny_head(p6p7=True).to(device)
    with torch.no_grad():  # large regression outputs: stride 128 * e^10 overflows float16, not float32
        head.head.box_regression.bias.fill_(9.0)
    text = torch.randn(2, 5, 16, device=device)
    mask = torch.ones(2, 5, dtype=torch.bool, device=device)
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "positive_map": torch.tensor([[0, 1, 1, 0, 0]]).bool()}] * 2
    with torch.autocast(device, dtype=dtype):
        out = head(_maps(device=device), text, mask)
        losses = head.loss(out, targets)
    assert out["box_distances"].dtype == torch.float32 and out["token_logits"].dtype == torch.float32
    assert bool(torch.isfinite(out["box_distances"]).all())
    assert all(bool(torch.isfinite(value)) for value in losses.values()), losses
    sum(losses.values()).backward()
