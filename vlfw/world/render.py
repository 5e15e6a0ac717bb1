"""Drawing scenes with PIL, on a textured, noisy background."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from vlfw.world.scene import COLORS, Scene, polygon_points


def render_scene(scene: Scene) -> np.ndarray:
    """The scene as an (H, W, 3) uint8 array."""
    rng = np.random.default_rng(scene.texture_seed)
    h, w = scene.height, scene.width
    # Low-frequency texture: a coarse random grid upsampled, so the background is not flat.
    coarse = rng.normal(0.0, 14.0, size=(6, 6, 3))
    coarse_img = Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    base = np.asarray(coarse_img, dtype=np.float32) - 128.0 + np.asarray(scene.background, np.float32)
    canvas = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    # A few faint distractor strokes.
    for _ in range(int(rng.integers(1, 4))):
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, w, size=4))
        shade = tuple(int(v) for v in np.clip(np.asarray(scene.background) + rng.integers(-30, 31, size=3), 0, 255))
        draw.line([(x0, y0), (x1, y1)], fill=shade, width=int(rng.integers(1, 3)))
    for obj in scene.objects:
        rgb = np.asarray(COLORS[obj.color], np.float32) + rng.normal(0, 8, size=3)
        fill = tuple(int(v) for v in np.clip(rgb, 0, 255))
        outline = tuple(int(v) for v in np.clip(rgb * 0.6, 0, 255))
        draw.polygon(polygon_points(obj), fill=fill, outline=outline)
    pixels = np.asarray(canvas, dtype=np.float32) + rng.normal(0.0, 6.0, size=(h, w, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def save_image(pixels: np.ndarray, path: str) -> None:
    """JPEG (quality 90) for .jpg names, PNG otherwise."""
    img = Image.fromarray(pixels)
    if path.endswith((".jpg", ".jpeg")):
        img.save(path, format="JPEG", quality=90)
    else:
        img.save(path, format="PNG", compress_level=1)
