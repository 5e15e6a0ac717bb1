"""What a referring expression means in a scene, and which objects it fits.

A meaning is a small dict kept next to the text by the RefCOCO generators:

    {"shape": "circle", "color": "red" | None, "size": "large" | None,
     "location": "leftmost" | "rightmost" | "top" | "bottom" | None,
     "relation": None | ("next to", <partner meaning without location/relation>)}

`fits(scene, meaning)` lists the objects the expression is true of: the objects with the named
attributes; with a relation, only those for which some other object fitting the partner stands
in that relation (`vlfw.world.scene.relation`); with a location word, only those among the
attribute matches whose coordinate is within `LOCATION_MARGIN` pixels of the extreme one (so two
objects almost equally far left both fit "the leftmost ..."). An expression is unambiguous when
exactly one object fits. `parse_expression` reads the meaning back from the text alone (the
world's closed vocabulary), so expressions written to disk can be checked without the generator.
"""

from __future__ import annotations

from vlfw.world.language import COLOR_WORDS, RELATION_WORDS, SHAPE_WORDS, SIZE_WORDS, tokenize
from vlfw.world.scene import Scene, relation

LOCATION_MARGIN = 8.0
LOCATION_KEYS = {"leftmost": lambda o: o.cx, "rightmost": lambda o: -o.cx,
                 "top": lambda o: o.cy, "bottom": lambda o: -o.cy}
# Location phrases written by the generators (prefix or suffix of the noun phrase).
LOCATION_PHRASES = {"leftmost": ["left", "leftmost", "on the left"], "rightmost": ["right", "rightmost", "on the right"],
                    "top": ["top", "upper", "at the top"], "bottom": ["bottom", "lower", "at the bottom"]}


def meaning(shape: str, color: str | None = None, size: str | None = None, location: str | None = None,
            relation_to: tuple[str, dict] | None = None) -> dict:
    return {"shape": shape, "color": color, "size": size, "location": location, "relation": relation_to}


def _attribute_matches(scene: Scene, m: dict) -> list[int]:
    return [i for i, o in enumerate(scene.objects)
            if o.shape == m["shape"] and m.get("color") in (None, o.color) and m.get("size") in (None, o.size)]


def fits(scene: Scene, m: dict) -> list[int]:
    """Indices of the objects of `scene` that the meaning `m` is true of."""
    found = _attribute_matches(scene, m)
    if m.get("relation") is not None:
        rel, partner = m["relation"]
        others = fits(scene, partner)
        found = [i for i in found if any(j != i and rel in relation(scene.objects[i], scene.objects[j])
                                         for j in others)]
    if m.get("location") is not None and found:
        key = LOCATION_KEYS[m["location"]]
        best = min(key(scene.objects[i]) for i in found)
        found = [i for i in found if key(scene.objects[i]) - best <= LOCATION_MARGIN]
    return found


def is_unique(scene: Scene, m: dict, index: int) -> bool:
    return fits(scene, m) == [index]


# ---- reading a meaning back from the text ------------------------------------------------------

def _lexicon() -> list[tuple[tuple[str, ...], str, str]]:
    entries = []
    for shape, words in SHAPE_WORDS.items():
        for w in words:
            entries.append((tuple(w.split()), "shape", shape))
    entries += [(("boxes",), "shape", "square"), (("crosses",), "shape", "cross")]
    for color, words in COLOR_WORDS.items():
        for w in words:
            entries.append((tuple(w.split()), "color", color))
    for size, words in SIZE_WORDS.items():
        for w in words:
            entries.append(((w,), "size", size))
    for rel, words in RELATION_WORDS.items():
        for w in words:
            entries.append((tuple(w.split()), "relation", rel))
    for loc, words in LOCATION_PHRASES.items():
        for w in words:
            entries.append((tuple(w.split()), "location", loc))
    entries += [(("the", loc, "one", "of", "its", "kind"), "location", loc) for loc in LOCATION_KEYS]
    # Longest phrases first, so "on the left of" is a relation and "light green" is green, not light blue.
    return sorted(entries, key=lambda e: -len(e[0]))


LEXICON = _lexicon()


def parse_expression(text: str) -> dict | None:
    """The meaning of a generated expression, or None when the text names no shape."""
    tokens = tokenize(text)
    groups: list[dict] = [{}]
    k = 0
    while k < len(tokens):
        for phrase, kind, value in LEXICON:
            if tuple(tokens[k:k + len(phrase)]) == phrase:
                if kind == "relation":
                    groups.append({})
                    groups[0]["relation"] = value
                elif kind == "location":
                    groups[0]["location"] = value
                else:
                    groups[-1].setdefault(kind, value)
                k += len(phrase)
                break
        else:
            k += 1  # articles and fillers ("a", "the", "that is", "among 3 other shapes" ...)
    head = groups[0]
    if "shape" not in head:
        return None
    partner = None
    if len(groups) > 1:
        if "shape" not in groups[1]:
            return None
        partner = meaning(groups[1]["shape"], groups[1].get("color"), groups[1].get("size"))
    return meaning(head["shape"], head.get("color"), head.get("size"), head.get("location"),
                   (head["relation"], partner) if partner is not None else None)
