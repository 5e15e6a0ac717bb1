"""VQA questions with balanced answers and ten noisy human answers each.

For every question the target answer is drawn first (yes/no 50/50, a uniform count, colour or
shape) and the scene is edited to make it true; answers are recomputed from the final scene and
the image is redrawn when a later edit broke an earlier question.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from vlfw.world.language import COLOR_WORDS, NUMBER_WORDS, SHAPE_WORDS, color_word, pick, plural, shape_word, vary_case
from vlfw.world.scene import COLOR_NAMES, SHAPES, Scene, WorldObject, relation, sample_scene

TEMPLATES = ["exists", "relation", "count_shape", "count_color", "color_of", "shape_of"]
COUNT_TARGETS = [1, 2, 3, 4]


def _draw_target(rng: np.random.Generator, template: str):
    if template in ("exists", "relation"):
        return "yes" if rng.random() < 0.5 else "no"
    if template in ("count_shape", "count_color"):
        return str(COUNT_TARGETS[int(rng.integers(len(COUNT_TARGETS)))])
    if template == "color_of":
        return COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]
    return SHAPES[int(rng.integers(len(SHAPES)))]


def _plan_objects(rng: np.random.Generator, template: str, target: str, objs: list[WorldObject]) -> dict:
    """Edit the (unplaced) object list so that the planned question has `target` as answer."""
    def other(values, not_value):
        return pick(rng, [v for v in values if v != not_value])

    if template == "exists":
        o = objs[int(rng.integers(len(objs)))]
        if target == "yes":
            return {"shape": o.shape, "color": o.color}
        present = {(p.shape, p.color) for p in objs}
        absent = [(s, c) for s in SHAPES for c in COLOR_NAMES if (s, c) not in present]
        s, c = absent[int(rng.integers(len(absent)))]
        return {"shape": s, "color": c}
    if template in ("count_shape", "count_color"):
        n = int(target)
        key = "shape" if template == "count_shape" else "color"
        values = SHAPES if key == "shape" else COLOR_NAMES
        value = pick(rng, values)
        while len(objs) < n + 1 and len(objs) < 6:
            objs.append(WorldObject(pick(rng, SHAPES), pick(rng, COLOR_NAMES), pick(rng, ["small", "large"])))
        chosen = set(int(i) for i in rng.permutation(len(objs))[:n])
        for i, o in enumerate(objs):
            if i in chosen:
                setattr(o, key, value)
            elif getattr(o, key) == value:
                setattr(o, key, other(values, value))
        return {key: value}
    if template == "color_of":
        i = int(rng.integers(len(objs)))
        objs[i].color = target
        for j, o in enumerate(objs):
            if j != i and o.shape == objs[i].shape:
                o.shape = other(SHAPES, objs[i].shape)
        return {"shape": objs[i].shape}
    if template == "shape_of":
        i = int(rng.integers(len(objs)))
        objs[i].shape = target
        for j, o in enumerate(objs):
            if j != i and o.color == objs[i].color:
                o.color = other(COLOR_NAMES, objs[i].color)
        return {"color": objs[i].color}
    return {}  # relation: chosen after placement


def _unique_pairs(scene: Scene) -> list[tuple[int, int]]:
    unique = [i for i, o in enumerate(scene.objects) if scene.matching(shape=o.shape, color=o.color) == [i]]
    return [(i, j) for i in unique for j in unique if i != j
            and ("left of" in relation(scene.objects[i], scene.objects[j]))
            and abs(scene.objects[i].cx - scene.objects[j].cx) > 12]


def answer(scene: Scene, q: dict) -> str:
    """The true answer of a planned question in `scene`."""
    t, a = q["template"], q["args"]
    if t == "exists":
        return "yes" if scene.count(a["shape"], a["color"]) else "no"
    if t == "count_shape":
        return str(scene.count(shape=a["shape"]))
    if t == "count_color":
        return str(scene.count(color=a["color"]))
    if t == "color_of":
        idx = scene.matching(shape=a["shape"])
        return scene.objects[idx[0]].color if len(idx) == 1 else "?"
    if t == "shape_of":
        idx = scene.matching(color=a["color"])
        return scene.objects[idx[0]].shape if len(idx) == 1 else "?"
    if t == "relation":
        i = scene.matching(shape=a["a_shape"], color=a["a_color"])
        j = scene.matching(shape=a["b_shape"], color=a["b_color"])
        if len(i) != 1 or len(j) != 1:
            return "?"
        rels = relation(scene.objects[i[0]], scene.objects[j[0]])
        return "yes" if a["relation"] in rels else "no"
    raise ValueError(t)


def _question_text(rng: np.random.Generator, q: dict) -> tuple[str, str]:
    """(question, question_type)."""
    t, a = q["template"], q["args"]
    if t == "exists":
        thing = f"{color_word(rng, a['color'])} {shape_word(rng, a['shape'])}"
        art = "an" if thing[0] in "aeiou" else "a"
        form = int(rng.integers(3))
        text = [f"is there {art} {thing} in the picture?", f"do you see {art} {thing}?",
                f"is there {art} {thing}?"][form]
        qtype = ["is there a", "do you see a", "is there a"][form]
    elif t in ("count_shape", "count_color"):
        noun = (plural(shape_word(rng, a["shape"])) if t == "count_shape"
                else f"{color_word(rng, a['color'])} {pick(rng, ['shapes', 'objects', 'things'])}")
        form = int(rng.integers(3))
        text = [f"how many {noun} are there?", f"how many {noun} can you see?",
                f"how many {noun} are in the image?"][form]
        qtype = "how many"
    elif t == "color_of":
        spelling = pick(rng, ["color", "colour"])
        form = int(rng.integers(2))
        text = [f"what {spelling} is the {shape_word(rng, a['shape'])}?",
                f"which {spelling} does the {shape_word(rng, a['shape'])} have?"][form]
        qtype = ["what color is the", "which"][form]
    elif t == "shape_of":
        form = int(rng.integers(2))
        text = [f"what shape is the {color_word(rng, a['color'])} object?",
                f"what is the {color_word(rng, a['color'])} thing?"][form]
        qtype = ["what shape is the", "what is the"][form]
    else:
        rel = a["relation"]
        text = (f"is the {color_word(rng, a['a_color'])} {shape_word(rng, a['a_shape'])} "
                f"{'to the ' if rng.random() < 0.5 else ''}{rel} the {color_word(rng, a['b_color'])} "
                f"{shape_word(rng, a['b_shape'])}?")
        qtype = "is the"
    return vary_case(rng, text).replace("?", "?" if rng.random() < 0.95 else ""), qtype


def plan_image(rng: np.random.Generator, templates: list[str], width: int, height: int,
               tries: int = 30) -> tuple[Scene, list[dict]]:
    """A scene and questions about it whose answers follow freshly drawn targets."""
    targets = [(t, _draw_target(rng, t)) for t in templates]
    for attempt in range(tries):
        n = int(rng.integers(2, 7))
        objs = [WorldObject(pick(rng, SHAPES), pick(rng, COLOR_NAMES), pick(rng, ["small", "large"]))
                for _ in range(n)]
        planned = [{"template": t, "target": y} for t, y in targets]
        # "exists" is planned last: it only reads the objects, so the other templates' edits
        # cannot turn its planned yes into no (which unbalanced its answers).
        for q in sorted(planned, key=lambda q: q["template"] == "exists"):
            q["args"] = _plan_objects(rng, q["template"], q["target"], objs)
        scene = sample_scene(rng, width, height, objects=objs)
        ok = True
        for q in planned:
            if q["template"] == "relation":
                pairs = _unique_pairs(scene)
                if not pairs:
                    ok = False
                    break
                i, j = pairs[int(rng.integers(len(pairs)))]
                if rng.random() < 0.5:
                    i, j = j, i  # a right-of pair: the question asks about "left of" or "right of"
                rel_word = "left of" if q["target"] == "yes" else "right of"
                if scene.objects[i].cx > scene.objects[j].cx:
                    rel_word = "right of" if q["target"] == "yes" else "left of"
                A, B = scene.objects[i], scene.objects[j]
                q["args"] = {"a_shape": A.shape, "a_color": A.color, "b_shape": B.shape,
                             "b_color": B.color, "relation": rel_word}
        if ok and all(answer(scene, q) == q["target"] for q in planned):
            break
    for q in planned:
        q["answer"] = answer(scene, q) if q["template"] != "relation" or "a_shape" in q["args"] else "?"
    # Rarely no scene satisfies every target: keep the questions whose answer is still the drawn
    # target (true of the scene and keeping the balance), drop the others.
    planned = [q for q in planned if q["answer"] == q["target"]]
    for q in planned:
        q["question"], q["question_type"] = _question_text(rng, q)
        q["answer_type"] = ("yes/no" if q["template"] in ("exists", "relation")
                            else "number" if q["template"].startswith("count") else "other")
    return scene, planned


def _variant(rng: np.random.Generator, ans: str, answer_type: str) -> str:
    """A different way of writing the same answer."""
    if answer_type == "number":
        n = int(ans)
        return pick(rng, [NUMBER_WORDS[n], f"{n} ", f"{n}."])
    if answer_type == "yes/no":
        return pick(rng, [ans.capitalize(), ans + ".", ans + "!", "yeah" if ans == "yes" else "nope"])
    if ans in SHAPE_WORDS:
        return pick(rng, [w for w in SHAPE_WORDS[ans] if w != ans] + [f"a {ans}", f"the {ans}"])
    options = [w for w in COLOR_WORDS.get(ans, []) if w != ans] + [f"a {ans} one", f"{ans}.", ans.capitalize()]
    return pick(rng, options)


def _wrong(rng: np.random.Generator, ans: str, answer_type: str) -> str:
    if answer_type == "yes/no":
        return "no" if ans == "yes" else "yes"
    if answer_type == "number":
        return str(max(0, int(ans) + pick(rng, [-1, 1])))
    pool = SHAPES if ans in SHAPES else COLOR_NAMES
    return pick(rng, [v for v in pool if v != ans])


def human_answers(rng: np.random.Generator, ans: str, answer_type: str) -> tuple[list[dict], str]:
    """Ten answers with realistic disagreement, and the most common one."""
    hard = rng.random() < 0.2
    texts = []
    for _ in range(10):
        r = rng.random()
        if r < (0.62 if hard else 0.8):
            texts.append((ans, "yes" if rng.random() < 0.9 else "maybe"))
        elif r < (0.85 if hard else 0.95):
            texts.append((_variant(rng, ans, answer_type), "yes" if rng.random() < 0.6 else "maybe"))
        else:
            texts.append((_wrong(rng, ans, answer_type), pick(rng, ["maybe", "no"])))
    # The canonical answer stays the strict majority string, as in the real data.
    for k in range(10):
        counts = Counter(t for t, _ in texts)
        if counts[ans] >= 4 and counts[ans] > max(v for t, v in counts.items() if t != ans or len(counts) == 1):
            break
        if texts[k][0] != ans:
            texts[k] = (ans, "yes")
    answers = [{"answer": t, "answer_confidence": c, "answer_id": k + 1} for k, (t, c) in enumerate(texts)]
    most_common = Counter(t for t, _ in texts).most_common(1)[0][0]
    return answers, most_common


def image_templates(rng: np.random.Generator, per_image: int) -> list[str]:
    return [TEMPLATES[int(i)] for i in rng.permutation(len(TEMPLATES))[:per_image]]
