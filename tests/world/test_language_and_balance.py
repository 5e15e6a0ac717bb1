"""Questions and texts: balanced answers per template, real lexical variety."""

import collections
import json
import pickle

from vlfw.world.coco import plan_vqa_images
from vlfw.world.language import SHAPE_WORDS
from vlfw.world.vqa import COUNT_TARGETS, TEMPLATES, answer


def test_answers_balanced_per_template():
    # Planning only (no rendering): enough questions for tight frequency estimates.
    images = plan_vqa_images(seed=3, counts={"train2014": 1200})
    by_template = collections.defaultdict(collections.Counter)
    for img in images:
        for q in img.questions:
            by_template[q["template"]][q["answer"]] += 1
            assert answer(img.scene, q) == q["answer"]  # the answer is true of the scene
    assert set(by_template) == set(TEMPLATES)
    for template, counts in by_template.items():
        total = sum(counts.values())
        expected = {"exists": 2, "relation": 2, "count_shape": len(COUNT_TARGETS),
                    "count_color": len(COUNT_TARGETS), "color_of": 9, "shape_of": 7}[template]
        assert len(counts) == expected, (template, counts)
        # A text-only model that always says the most common answer stays near chance.
        assert max(counts.values()) / total < 1.0 / expected + 0.08, (template, counts)


def test_question_ids_and_answer_agreement(world):
    ann = json.load(open(f"{world}/vqa2/v2_mscoco_train2014_annotations.json"))["annotations"]
    agree = [sum(a["answer"] == x["multiple_choice_answer"] for a in x["answers"]) for x in ann]
    assert min(agree) >= 4 and sum(agree) / len(agree) > 6
    all_answers = {a["answer"] for x in ann for a in x["answers"]}
    assert all_answers & {"two", "three", "one", "four"}  # numbers as words
    assert any(a.endswith((".", "!")) or a[:1].isupper() for a in all_answers)


def _all_text(world):
    texts = []
    for name in ("coco", "flickr30k"):
        data = json.load(open(f"{world}/karpathy/dataset_{name}.json"))
        texts += [s["raw"] for img in data["images"] for s in img["sentences"]]
    q = json.load(open(f"{world}/vqa2/v2_OpenEnded_mscoco_train2014_questions.json"))["questions"]
    texts += [x["question"] for x in q]
    refs = pickle.load(open(f"{world}/refcoco/refcocog/refs(umd).p", "rb"))
    texts += [s["raw"] for r in refs for s in r["sentences"]]
    return texts


def test_language_variety(world):
    texts = _all_text(world)
    lower = " ".join(texts).lower()
    synonyms_used = [w for words in SHAPE_WORDS.values() for w in words[1:] if f" {w}" in lower]
    assert len(synonyms_used) >= 5, synonyms_used
    assert any(w in lower for w in ("light blue", "dark green", "sky blue"))  # multi-word names
    assert any(t[:1].islower() for t in texts) and any(t[:1].isupper() for t in texts)
    assert any(w in lower for w in ("boxes", "crosses", "circles", "squares"))  # plurals
    assert len(set(texts)) > 0.5 * len(texts)
