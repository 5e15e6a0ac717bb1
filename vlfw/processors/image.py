"""Image transforms (torchvision.transforms.v2) that move xyxy boxes with the pixels."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from vlfw.processors.base import Processor
from vlfw.registry import PROCESSORS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTATIONS = ("randaugment",)


GEOMETRIC_OPS = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"})


class BoxAwareRandAugment(v2.RandAugment):
    """RandAugment that also moves bounding boxes through its geometric operations.

    torchvision's RandAugment rejects BoundingBoxes; this draws the same operations from the
    same RNG calls and applies the geometric ones (shear, translate, rotate) to the boxes too.
    Called as (image, boxes) with an Image tensor and BoundingBoxes.
    """

    def forward(self, *inputs: Any) -> Any:
        if len(inputs) != 2 or not isinstance(inputs[1], tv_tensors.BoundingBoxes):
            return super().forward(*inputs)
        image, boxes = inputs
        height, width = image.shape[-2:]
        for _ in range(self.num_ops):
            transform_id, (magnitudes_fn, signed) = self._get_random_item(self._AUGMENTATION_SPACE)
            magnitudes = magnitudes_fn(self.num_magnitude_bins, height, width)
            if magnitudes is not None:
                magnitude = float(magnitudes[self.magnitude])
                if signed and torch.rand(()) <= 0.5:
                    magnitude *= -1
            else:
                magnitude = 0.0
            image = self._apply_image_or_video_transform(
                image, transform_id, magnitude, interpolation=self.interpolation, fill=self._fill
            )
            if transform_id in GEOMETRIC_OPS:
                boxes = self._apply_image_or_video_transform(
                    boxes, transform_id, magnitude, interpolation=self.interpolation, fill=self._fill
                )
        return image, boxes


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    size = [int(s) for s in size]
    if len(size) == 1:
        return (size[0], size[0])
    if len(size) != 2:
        raise ValueError(f"image_transform: size must be an int or [height, width], got {size}")
    return (size[0], size[1])


@PROCESSORS.register("image_transform")
class ImageTransform(Processor):
    """PIL image (and optional xyxy boxes) -> normalised FloatTensor (3, H, W) (and boxes).

    `size` is an int (a square H = W = size) or [height, width]. With `train_augment:
    randaugment`, RandAugment is applied after resizing when called with train=True; boxes
    follow its geometric operations. Given a `generator`, the augmentation is reproducible
    from it and the global RNG state is left untouched.
    """

    def __init__(
        self,
        size: int | Sequence[int] = 224,
        train_augment: str | None = None,
        randaugment_ops: int = 2,
        randaugment_magnitude: int = 9,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__(size=size, train_augment=train_augment, randaugment_ops=randaugment_ops,
                         randaugment_magnitude=randaugment_magnitude, mean=mean, std=std)
        if train_augment not in (None, *AUGMENTATIONS):
            raise ValueError(f"image_transform: unknown train_augment {train_augment!r}; use one of "
                             f"{', '.join(AUGMENTATIONS)} or null")
        self.size = _size_pair(size)
        self.train_augment = train_augment
        resize = [v2.ToImage(), v2.Resize(self.size, antialias=True)]
        finish = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)),
                  v2.ClampBoundingBoxes()]
        self._eval_transform = v2.Compose(resize + finish)
        self._train_transform = self._eval_transform
        if train_augment == "randaugment":
            augment = BoxAwareRandAugment(num_ops=int(randaugment_ops), magnitude=int(randaugment_magnitude))
            self._train_transform = v2.Compose(resize + [augment] + finish)

    def __call__(  # type: ignore[override]
        self,
        image: Image.Image,
        boxes: torch.Tensor | None = None,
        train: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if image.mode != "RGB":
            image = image.convert("RGB")
        inputs: list[Any] = [image]
        if boxes is not None:
            boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
            inputs.append(tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(image.height, image.width)))
        transform = self._train_transform if train else self._eval_transform
        if transform is self._eval_transform or generator is None:
            outputs = transform(*inputs)
        else:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                outputs = transform(*inputs)
        if boxes is None:
            pixels = outputs if not isinstance(outputs, (tuple, list)) else outputs[0]
            return pixels.as_subclass(torch.Tensor), None
        pixels, moved = outputs
        return pixels.as_subclass(torch.Tensor), moved.as_subclass(torch.Tensor).clone()
