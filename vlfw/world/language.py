"""Words for the Shapes world: synonyms, plurals, noun phrases, captions, referring expressions."""

from __future__ import annotations

import numpy as np

from vlfw.world.scene import Scene, WorldObject, relation

SHAPE_WORDS = {
    "circle": ["circle", "ball", "disc", "round shape", "dot"],
    "square": ["square", "box", "block", "cube"],
    "triangle": ["triangle", "pyramid", "wedge"],
    "star": ["star", "star shape"],
    "hexagon": ["hexagon", "six-sided shape"],
    "diamond": ["diamond", "rhombus", "lozenge"],
    "cross": ["cross", "plus sign", "plus"],
}
PLURALS = {"box": "boxes", "cross": "crosses", "plus": "pluses", "rhombus": "rhombuses", "plus sign": "plus signs"}
COLOR_WORDS = {
    "red": ["red", "scarlet"],
    "orange": ["orange"],
    "yellow": ["yellow"],
    "green": ["green", "light green"],
    "dark green": ["dark green", "deep green"],
    "blue": ["blue", "dark blue"],
    "light blue": ["light blue", "sky blue", "pale blue"],
    "purple": ["purple", "violet"],
    "pink": ["pink"],
}
SIZE_WORDS = {"small": ["small", "little", "tiny"], "large": ["large", "big", "huge"]}
RELATION_WORDS = {
    "left of": ["left of", "to the left of", "on the left of"],
    "right of": ["right of", "to the right of", "on the right side of"],
    "above": ["above", "over", "on top of"],
    "below": ["below", "under", "underneath"],
    "next to": ["next to", "beside", "near", "close to"],
}
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
THING_WORDS = ["shape", "object", "thing"]
BACKGROUND_WORDS = ["a grey background", "a textured background", "a noisy backdrop", "a plain surface"]


def pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def plural(word: str) -> str:
    if word in PLURALS:
        return PLURALS[word]
    head, _, last = word.rpartition(" ")
    if head and last in ("shape",):
        return word + "s"
    return word + "s"


def shape_word(rng: np.random.Generator, shape: str, canonical: float = 0.6) -> str:
    """The canonical name most of the time, a synonym otherwise."""
    return shape if rng.random() < canonical else pick(rng, SHAPE_WORDS[shape])


def color_word(rng: np.random.Generator, color: str, canonical: float = 0.75) -> str:
    return color if rng.random() < canonical else pick(rng, COLOR_WORDS[color])


def object_phrase(rng: np.random.Generator, obj: WorldObject, with_size: bool | None = None,
                  with_color: bool = True) -> str:
    """'large red circle', 'ball', 'small sky blue box' ..."""
    words = []
    if with_size is None:
        with_size = rng.random() < 0.35
    if with_size:
        words.append(pick(rng, SIZE_WORDS[obj.size]))
    if with_color:
        words.append(color_word(rng, obj.color))
    words.append(shape_word(rng, obj.shape))
    return " ".join(words)


def article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def count_phrase(rng: np.random.Generator, n: int, noun: str) -> str:
    num = NUMBER_WORDS[n] if (n <= 10 and rng.random() < 0.7) else str(n)
    return f"{num} {noun if n == 1 else plural(noun)}"


def vary_case(rng: np.random.Generator, text: str) -> str:
    """Sentence case mostly; sometimes all lower, Title Case or an upper-case first word."""
    r = rng.random()
    if r < 0.6:
        return text[:1].upper() + text[1:]
    if r < 0.8:
        return text.lower()
    if r < 0.9:
        return " ".join(w[:1].upper() + w[1:] for w in text.split(" "))
    first, _, rest = text.partition(" ")
    return first.upper() + (" " + rest if rest else "")


def tokenize(text: str) -> list[str]:
    """Lower-cased words without punctuation (the Karpathy / RefCOCO token convention)."""
    cleaned = "".join(c if (c.isalnum() or c in " -'") else " " for c in text.lower())
    return cleaned.split()


def relation_pair(rng: np.random.Generator, scene: Scene) -> tuple[int, int, str] | None:
    """A random (a, b, relation) that holds in the scene."""
    n = len(scene.objects)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    if not pairs:
        return None
    order = rng.permutation(len(pairs))
    for k in order:
        i, j = pairs[int(k)]
        rels = relation(scene.objects[i], scene.objects[j])
        if rels:
            return i, j, pick(rng, rels)
    return None


def caption(rng: np.random.Generator, scene: Scene) -> str:
    """One human-like caption of a scene, from several templates."""
    objs = scene.objects
    template = int(rng.integers(6))
    if template == 0:
        rel = relation_pair(rng, scene)
        if rel is not None:
            i, j, r = rel
            text = (f"{article(object_phrase(rng, objs[i]))} {pick(rng, RELATION_WORDS[r])} "
                    f"{article(object_phrase(rng, objs[j]))}")
            return _finish(rng, text)
        template = 1
    if template == 1:
        phrases = [article(object_phrase(rng, o, with_size=False)) for o in objs[:3]]
        text = ", ".join(phrases[:-1]) + " and " + phrases[-1] if len(phrases) > 1 else phrases[0]
        return _finish(rng, f"{text} on {pick(rng, BACKGROUND_WORDS)}")
    if template == 2:
        return _finish(rng, f"{count_phrase(rng, len(objs), pick(rng, THING_WORDS))} of different colours")
    if template == 3:
        o = objs[int(rng.integers(len(objs)))]
        same = scene.count(shape=o.shape)
        noun = shape_word(rng, o.shape)
        return _finish(rng, f"there {'is' if same == 1 else 'are'} {count_phrase(rng, same, noun)} in the picture")
    if template == 4:
        o = objs[int(rng.integers(len(objs)))]
        return _finish(rng, f"a picture with {article(object_phrase(rng, o, with_size=True))} among other shapes")
    big = [o for o in objs if o.size == "large"] or objs
    o = big[int(rng.integers(len(big)))]
    return _finish(rng, f"{article(object_phrase(rng, o))} and {count_phrase(rng, len(objs) - 1, 'other shape')}")


def _finish(rng: np.random.Generator, text: str) -> str:
    text = vary_case(rng, text)
    if rng.random() < 0.7:
        text += "."
    if rng.random() < 0.15:
        text += " "
    return text


def distinguishing_words(scene: Scene, index: int) -> list[str]:
    """Attributes ('size', 'color') needed with the shape so that only `index` matches, or []."""
    o = scene.objects[index]
    for attrs in (("color",), ("size", "color"), ("size",)):
        keys = {"shape": o.shape, **{a: getattr(o, a) for a in attrs}}
        if scene.matching(**keys) == [index]:
            return list(attrs)
    if scene.matching(shape=o.shape) == [index]:
        return ["shape-only"]
    return []


def location_word(scene: Scene, index: int) -> str | None:
    """An absolute location word ('leftmost', 'top') that singles out an object among its kind."""
    o = scene.objects[index]
    same = [scene.objects[i] for i in scene.matching(shape=o.shape, color=o.color)]
    if len(same) < 2:
        same = [scene.objects[i] for i in scene.matching(shape=o.shape)]
    for word, key in (("leftmost", lambda p: p.cx), ("rightmost", lambda p: -p.cx),
                      ("top", lambda p: p.cy), ("bottom", lambda p: -p.cy)):
        ordered = sorted(same, key=key)
        if ordered[0] is o and (len(ordered) == 1 or abs(key(ordered[1]) - key(o)) > 8):
            return word
    return None
