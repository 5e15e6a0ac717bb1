import torch

from vlfw.processors.boxes import (
    box_geometry,
    box_iou,
    clip_boxes,
    normalize_boxes,
    validate_boxes,
    xywh_to_xyxy,
    xyxy_to_xywh,
)


def test_conversions_roundtrip():
    xywh = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    xyxy = xywh_to_xyxy(xywh)
    assert xyxy.tolist() == [[10.0, 20.0, 40.0, 60.0]]
    assert torch.equal(xyxy_to_xywh(xyxy), xywh)


def test_iou_by_hand():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    iou = box_iou(a, b)
    assert iou.shape == (1, 2)
    assert torch.allclose(iou, torch.tensor([[50 / 150, 0.0]]))


def test_clip_normalize_geometry():
    boxes = torch.tensor([[-5.0, 10.0, 250.0, 50.0]])
    assert clip_boxes(boxes, 200, 100).tolist() == [[0.0, 10.0, 200.0, 50.0]]
    assert torch.allclose(normalize_boxes(torch.tensor([[20.0, 10.0, 100.0, 50.0]]), 200, 100),
                          torch.tensor([[0.1, 0.1, 0.5, 0.5]]))
    geometry = box_geometry(torch.tensor([[20.0, 10.0, 100.0, 50.0]]), 200, 100)
    assert torch.allclose(geometry, torch.tensor([[0.1, 0.1, 0.5, 0.5, 0.4, 0.4, 0.16]]))


def test_validate():
    assert validate_boxes(torch.tensor([[0.0, 0.0, 200.0, 100.0]]), 200, 100) is None
    assert "outside" in validate_boxes(torch.tensor([[0.0, 0.0, 260.0, 100.0]]), 200, 100)
    assert "degenerate" in validate_boxes(torch.tensor([[5.0, 5.0, 5.0, 9.0]]), 200, 100)
    assert "non-finite" in validate_boxes(torch.tensor([[float("nan"), 0.0, 5.0, 9.0]]), 200, 100)
