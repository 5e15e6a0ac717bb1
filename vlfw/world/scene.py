"""Scenes of the Shapes world: objects with a shape, colour, size and position."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

SHAPES = ["circle", "square", "triangle", "star", "hexagon", "diamond", "cross"]
# RefCOCO's testA/testB split by object family (people vs other objects in the real data).
SHAPE_FAMILY = {
    "circle": "round", "hexagon": "round", "star": "round",
    "square": "angular", "triangle": "angular", "diamond": "angular", "cross": "angular",
}
COLORS = {
    "red": (214, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 220, 50),
    "green": (60, 175, 75),
    "dark green": (20, 95, 45),
    "blue": (40, 70, 210),
    "light blue": (120, 190, 240),
    "purple": (135, 60, 175),
    "pink": (240, 130, 190),
}
COLOR_NAMES = list(COLORS)
SIZES = {"small": (7.0, 10.0), "large": (13.0, 16.0)}
RELATIONS = ["left of", "right of", "above", "below", "next to"]


def stable_seed(*parts: object) -> int:
    """A seed derived from `parts` that is the same in every process (unlike hash())."""
    return zlib.crc32("/".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def make_rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng(stable_seed(*parts))


@dataclass
class WorldObject:
    shape: str
    color: str
    size: str
    cx: float = 0.0
    cy: float = 0.0
    radius: float = 10.0
    angle: float = 0.0

    @property
    def box(self) -> list[float]:
        """Tight xyxy box in pixels of the drawn polygon."""
        pts = np.asarray(polygon_points(self))
        return [float(pts[:, 0].min()), float(pts[:, 1].min()),
                float(pts[:, 0].max()), float(pts[:, 1].max())]

    @property
    def family(self) -> str:
        return SHAPE_FAMILY[self.shape]


@dataclass
class Scene:
    width: int
    height: int
    objects: list[WorldObject] = field(default_factory=list)
    background: tuple[int, int, int] = (128, 128, 128)
    texture_seed: int = 0

    def count(self, shape: str | None = None, color: str | None = None) -> int:
        return sum(1 for o in self.objects
                   if (shape is None or o.shape == shape) and (color is None or o.color == color))

    def matching(self, **attrs: str) -> list[int]:
        return [i for i, o in enumerate(self.objects)
                if all(getattr(o, k) == v for k, v in attrs.items())]


def _regular(cx: float, cy: float, r: float, n: int, angle: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(angle + 2 * math.pi * k / n), cy + r * math.sin(angle + 2 * math.pi * k / n))
            for k in range(n)]


def polygon_points(obj: WorldObject) -> list[tuple[float, float]]:
    """The outline of an object as a polygon (circles with 20 vertices)."""
    cx, cy, r, a = obj.cx, obj.cy, obj.radius, obj.angle
    if obj.shape == "circle":
        return _regular(cx, cy, r, 20, 0.0)
    if obj.shape == "square":
        return _regular(cx, cy, r * 1.2, 4, math.pi / 4 + a * 0.3)
    if obj.shape == "triangle":
        return _regular(cx, cy, r * 1.15, 3, -math.pi / 2)
    if obj.shape == "diamond":
        return [(cx, cy - r * 1.2), (cx + r * 0.8, cy), (cx, cy + r * 1.2), (cx - r * 0.8, cy)]
    if obj.shape == "hexagon":
        return _regular(cx, cy, r * 1.05, 6, a)
    if obj.shape == "star":
        pts = []
        for k in range(10):
            rad = r * 1.15 if k % 2 == 0 else r * 0.5
            ang = -math.pi / 2 + math.pi * k / 5
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        return pts
    if obj.shape == "cross":
        t = r * 0.38
        s = r * 1.05
        return [(cx - t, cy - s), (cx + t, cy - s), (cx + t, cy - t), (cx + s, cy - t), (cx + s, cy + t),
                (cx + t, cy + t), (cx + t, cy + s), (cx - t, cy + s), (cx - t, cy + t), (cx - s, cy + t),
                (cx - s, cy - t), (cx - t, cy - t)]
    raise ValueError(f"unknown shape {obj.shape!r}")


def polygon_area(points: list[tuple[float, float]]) -> float:
    pts = np.asarray(points)
    x, y = pts[:, 0], pts[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def relation(a: WorldObject, b: WorldObject) -> list[str]:
    """Every relation word that holds for `a` with respect to `b`."""
    rels = []
    dx, dy = a.cx - b.cx, a.cy - b.cy
    if dx < -6:
        rels.append("left of")
    if dx > 6:
        rels.append("right of")
    if dy < -6:
        rels.append("above")
    if dy > 6:
        rels.append("below")
    if math.hypot(dx, dy) < a.radius + b.radius + 22:
        rels.append("next to")
    return rels


def random_object(rng: np.random.Generator, shapes: list[str] | None = None,
                  colors: list[str] | None = None) -> WorldObject:
    shapes = shapes or SHAPES
    colors = colors or COLOR_NAMES
    return WorldObject(shape=str(rng.choice(shapes)), color=str(rng.choice(colors)),
                       size="small" if rng.random() < 0.5 else "large")


def place_objects(scene: Scene, rng: np.random.Generator) -> bool:
    """Give every object a radius and a non-overlapping position; False when it fails."""
    placed: list[WorldObject] = []
    for obj in scene.objects:
        lo, hi = SIZES[obj.size]
        obj.radius = float(rng.uniform(lo, hi))
        obj.angle = float(rng.uniform(0, math.pi))
        margin = obj.radius * 1.25 + 2
        for _ in range(100):
            cx = float(rng.uniform(margin, scene.width - margin))
            cy = float(rng.uniform(margin, scene.height - margin))
            if all(math.hypot(cx - p.cx, cy - p.cy) > (obj.radius + p.radius) * 1.2 + 2 for p in placed):
                obj.cx, obj.cy = round(cx, 2), round(cy, 2)
                obj.radius = round(obj.radius, 2)
                obj.angle = round(obj.angle, 3)
                placed.append(obj)
                break
        else:
            return False
    return True


def sample_scene(rng: np.random.Generator, width: int = 128, height: int = 128,
                 objects: list[WorldObject] | None = None, min_objects: int = 2, max_objects: int = 6,
                 shapes: list[str] | None = None, colors: list[str] | None = None) -> Scene:
    """A random scene; `objects` (shape/colour/size set, position free) are placed as given."""
    for _ in range(50):
        if objects is None:
            n = int(rng.integers(min_objects, max_objects + 1))
            objs = [random_object(rng, shapes, colors) for _ in range(n)]
        else:
            objs = [WorldObject(o.shape, o.color, o.size) for o in objects]
        base = rng.integers(95, 175)
        tint = rng.integers(-18, 19, size=3)
        scene = Scene(width, height, objs,
                      background=tuple(int(v) for v in np.clip(base + tint, 0, 255)),
                      texture_seed=int(rng.integers(0, 2**31 - 1)))
        if place_objects(scene, rng):
            return scene
    raise RuntimeError("could not place the objects of a scene")
