import json

import pytest
import torch

from vlfw.data.batch import Batch
from vlfw.metrics.vqa import VQAAccuracy, score_vqa_results, vqa_score
from vlfw.registry import METRICS
from vlfw.tasks import TaskInfo


def _reference_score(prediction, humans):
    """Independent transcription of the official loop over answer entries."""
    from vlfw.processors.answers import process_digit_article, process_punctuation

    humans = [h.replace("\n", " ").replace("\t", " ").strip() for h in humans]
    prediction = prediction.replace("\n", " ").replace("\t", " ").strip()
    if len(set(humans)) > 1:
        humans = [process_digit_article(process_punctuation(h)) for h in humans]
        prediction = process_digit_article(process_punctuation(prediction))
    total = 0.0
    for i in range(len(humans)):
        others = humans[:i] + humans[i + 1:]
        total += min(1.0, others.count(prediction) / 3)
    return total / len(humans)


@pytest.mark.parametrize("prediction, humans, expected", [
    ("yes", ["yes"] * 10, 1.0),
    # 3 of 10 agree: 7 entries see 3 matches (1.0), 3 entries see 2 (2/3) -> 0.9
    ("yes", ["yes"] * 3 + ["no"] * 7, 0.9),
    ("yes", ["yes"] * 2 + ["no"] * 8, 0.6),
    ("yes", ["yes"] + ["no"] * 9, 0.3),
    ("maybe", ["yes"] * 5 + ["no"] * 5, 0.0),
    # numbers as words and articles
    ("2", ["two"] * 4 + ["three"] * 6, 1.0),
    ("the dog", ["dog"] * 2 + ["a dog"] + ["cat"] * 7, 0.9),
    # punctuation, normalised because the annotators disagree
    ("yes", ["yes!"] * 3 + ["no"] * 7, 0.9),
    # contractions
    ("don't know", ["dont know"] * 4 + ["no"] * 6, 1.0),
    # digit-comma-digit: commas vanish
    ("1000", ["1,000"] * 4 + ["1"] * 6, 1.0),
    # all answers identical: no normalisation, so "yes" does not match "yes!"
    ("yes", ["yes!"] * 10, 0.0),
    ("Yes!", ["Yes!"] * 10, 1.0),
    # whitespace cleaning always applies
    (" yes\n", ["yes"] * 10, 1.0),
])
def test_vqa_score_tricky_answers(prediction, humans, expected):
    assert vqa_score(prediction, humans) == pytest.approx(expected)
    assert vqa_score(prediction, humans) == pytest.approx(_reference_score(prediction, humans))


def _batch(n=6):
    answers = [["yes"] * 10, ["two"] * 4 + ["3"] * 6, ["red"] * 2 + ["blue"] * 8,
               ["no"] * 10, ["cat"] * 10, ["1"] * 3 + ["one"] * 2 + ["0"] * 5][:n]
    return Batch(index=torch.arange(n), id=[100 + i for i in range(n)], answers=answers,
                 answer_type=["yes/no", "number", "other", "yes/no", "other", "number"][:n])


VOCAB = ["yes", "no", "2", "3", "red", "blue", "1", "cat"]


def _logits(choices):
    logits = torch.zeros(len(choices), len(VOCAB))
    logits[torch.arange(len(choices)), torch.tensor(choices)] = 1.0
    return {"logits": logits}


def test_vqa_accuracy_metric_by_hand(check_two_ranks):
    make = lambda: METRICS.build("vqa_accuracy", task_info=TaskInfo(task="vqa", answers=tuple(VOCAB)))
    # yes->1.0, 2->1.0 (two==2 four times), red->0.6, yes->0, cat->1.0, 1->(3+2 normalised)=1.0
    outputs = _logits([0, 2, 4, 0, 7, 6])
    result = check_two_ranks(make, _batch(), outputs)
    assert result == {
        "vqa_accuracy": round(100 * (1 + 1 + 0.6 + 0 + 1 + 1) / 6, 2),
        "vqa_accuracy_number": 100.0,
        "vqa_accuracy_other": 80.0,
        "vqa_accuracy_yes_no": 50.0,
    }
    metric = make()
    metric.update(_batch(), outputs)
    assert metric.results()[1] == {"question_id": 101, "answer": "2"}
    assert VQAAccuracy.primary == "vqa_accuracy"


def test_vqa_accuracy_needs_answers():
    with pytest.raises(ValueError, match="answers"):
        VQAAccuracy(task_info=TaskInfo(task="vqa"))


def _write_official(tmp_path, items):
    questions = {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014",
                 "license": {}, "questions": []}
    annotations = {"info": {}, "license": {}, "data_type": "mscoco", "data_subtype": "val2014", "annotations": []}
    for qid, (answer_type, humans) in items.items():
        questions["questions"].append({"image_id": qid // 1000, "question": "?", "question_id": qid})
        annotations["annotations"].append({
            "question_id": qid, "image_id": qid // 1000, "question_type": "what", "answer_type": answer_type,
            "multiple_choice_answer": humans[0],
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(humans)],
        })
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    return tmp_path / "q.json", tmp_path / "a.json"


def test_score_results_file(tmp_path):
    items = {
        1000: ("yes/no", ["yes"] * 3 + ["no"] * 7),
        1001: ("number", ["two"] * 4 + ["three"] * 6),
        2000: ("other", ["yes!"] * 10),
        2001: ("other", ["Dog.", "dog", "the dog", "cat", "cat", "cat", "cat", "cat", "cat", "cat"]),
    }
    q, a = _write_official(tmp_path, items)
    results = [{"question_id": 1000, "answer": "yes"}, {"question_id": 1001, "answer": "2"},
               {"question_id": 2000, "answer": "yes"}, {"question_id": 2001, "answer": "a dog"}]
    scores = score_vqa_results(q, a, results)
    assert scores == {"vqa_accuracy": round(100 * (0.9 + 1 + 0 + 0.9) / 4, 2), "vqa_accuracy_number": 100.0,
                      "vqa_accuracy_other": 45.0, "vqa_accuracy_yes_no": 90.0, "num_questions": 4.0}
    with pytest.raises(ValueError, match="do not correspond"):
        score_vqa_results(q, a, results[:3])
    with pytest.raises(ValueError, match="more than once"):
        score_vqa_results(q, a, results + results[:1])


def test_score_results_compares_whole_answer_entries(tmp_path):
    # two entries identical in every field count as one entry "and its copy": the official
    # evaluator excludes both from each other's "other answers"
    q, a = _write_official(tmp_path, {5000: ("other", ["red"] * 3 + ["blue"] * 7)})
    data = json.loads(a.read_text())
    data["annotations"][0]["answers"][1]["answer_id"] = 1  # entry 1 now equals entry 0
    a.write_text(json.dumps(data))
    scores = score_vqa_results(q, a, [{"question_id": 5000, "answer": "red"}])
    # entries 0, 1 see one other "red" (entry 2): 1/3 each; entry 2 sees two: 2/3; blue entries see 3: 1
    assert scores["vqa_accuracy"] == round(100 * (1 / 3 + 1 / 3 + 2 / 3 + 7) / 10, 2)
