import pytest
import torch
from PIL import Image

from vlfw.processors.image import ImageTransform


def _image():
    image = Image.new("RGB", (200, 100), (0, 0, 0))
    image.paste((255, 255, 255), (20, 10, 120, 60))  # white box at xyxy 20,10,120,60
    return image


def test_eval_resize_moves_boxes_and_normalizes():
    transform = ImageTransform(size=[50, 100])
    pixels, boxes = transform(_image(), torch.tensor([[20.0, 10.0, 120.0, 60.0]]))
    assert pixels.shape == (3, 50, 100) and pixels.dtype == torch.float32
    assert type(pixels) is torch.Tensor and type(boxes) is torch.Tensor
    assert torch.allclose(boxes, torch.tensor([[10.0, 5.0, 60.0, 30.0]]))
    white = (1 - 0.485) / 0.229
    assert pixels[0, 15, 30].item() == pytest.approx(white, rel=1e-3)
    assert pixels[0, 45, 90].item() == pytest.approx(-0.485 / 0.229, rel=1e-3)
    square, none = ImageTransform(size=32)(_image().convert("L"))
    assert square.shape == (3, 32, 32) and none is None


def test_randaugment_only_in_training_and_reproducible():
    transform = ImageTransform(size=64, train_augment="randaugment", randaugment_magnitude=15)
    box = torch.tensor([[20.0, 10.0, 120.0, 60.0]])
    evaluation = transform(_image(), box, train=False)
    plain = ImageTransform(size=64)
    assert torch.equal(plain(_image(), box, train=True)[0], evaluation[0])
    runs = [transform(_image(), box, train=True, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    state = torch.get_rng_state()
    transform(_image(), box, train=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(state, torch.get_rng_state())
    outputs = [transform(_image(), box, train=True, generator=torch.Generator().manual_seed(s))[0] for s in range(8)]
    assert any(not torch.equal(o, evaluation[0]) for o in outputs)
    assert torch.equal(transform(_image(), box, train=False)[0], evaluation[0])


def test_boxes_follow_geometric_augmentation():
    transform = ImageTransform(size=[100, 200], train_augment="randaugment", randaugment_ops=1, mean=[0, 0, 0], std=[1, 1, 1])
    box = torch.tensor([[20.0, 10.0, 120.0, 60.0]])
    moved = 0
    for seed in range(40):
        pixels, boxes = transform(_image(), box, train=True, generator=torch.Generator().manual_seed(seed))
        if not torch.allclose(boxes, box):
            moved += 1
            x1, y1, x2, y2 = boxes[0].round().long().tolist()
            if x2 - x1 > 4 and y2 - y1 > 4:
                # the centre of the moved box still shows the (bright) box content
                assert pixels[:, (y1 + y2) // 2, (x1 + x2) // 2].mean() > 0.3
    assert moved > 0


def test_unknown_augmentation_is_an_error():
    with pytest.raises(ValueError, match="train_augment"):
        ImageTransform(train_augment="mixup")
