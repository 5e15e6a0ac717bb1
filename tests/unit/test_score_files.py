"""vlfw_score on hand-worked prediction files, and agreement with the in-run metrics.

Every expected value below is worked out by hand in the comment next to it."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))

import native  # noqa: E402  (tests/fixtures/native.py: hand-written native-format files)

from vlfw.cli.score import main  # noqa: E402
from vlfw.datasets.scoring import score_captioning, score_file  # noqa: E402


def write(path, document) -> str:
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(document if isinstance(document, str) else json.dumps(document))
    return str(path)


def write_jsonl(path, rows) -> None:
    write(path, "".join(json.dumps(r) + "\n" for r in rows))


def cli(capsys, *args) -> tuple[int, dict | None, list[str]]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()
    return code, (json.loads(out[-1]) if code == 0 else None), captured.err.strip().splitlines()


# -- VQA v2 ------------------------------------------------------------------------------------------


def answers(*pairs):
    flat = [a for a, n in pairs for _ in range(n)]
    assert len(flat) == 10
    return [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(flat)]


def test_vqa_three_questions_by_the_ten_answer_rule(tmp_path, capsys):
    items = [(1, "other", answers(("red", 2), ("blue", 8))), (2, "number", answers(("2", 3), ("3", 7))),
             (3, "yes/no", answers(("yes", 10)))]
    write(tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json", {"questions": [
        {"image_id": 9, "question": "q?", "question_id": qid} for qid, _, _ in items]})
    write(tmp_path / "v2_mscoco_val2014_annotations.json", {"annotations": [
        {"question_id": qid, "image_id": 9, "question_type": "what", "answer_type": kind,
         "multiple_choice_answer": a[-1]["answer"], "answers": a} for qid, kind, a in items]})
    results = write(tmp_path / "results.json", [{"question_id": 1, "answer": "red"}, {"question_id": 2, "answer": "two"},
                                                {"question_id": 3, "answer": " yes\n"}])
    code, scores, _ = cli(capsys, "vqa2", "--data-dir", tmp_path, "--split", "val2014", "--predictions", results)
    assert code == 0
    # q1 "red" (2 of 10 said red): each of the 10 leave-one-out subsets of 9 holds 1 red (the 2 red
    #    annotators left out) or 2 reds (the 8 others): (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    # q2 "two" -> "2" (answers differ, so both sides are normalised): 3 of 10 said 2:
    #    (3 * min(2/3, 1) + 7 * min(3/3, 1)) / 10 = 0.9
    # q3 " yes\n" stripped -> "yes", all 10 agree: every subset holds 9 yes -> 1.0
    assert scores["vqa_accuracy"] == 83.33  # 100 * (0.6 + 0.9 + 1.0) / 3, rounded to 2 places
    assert (scores["vqa_accuracy_other"], scores["vqa_accuracy_number"], scores["vqa_accuracy_yes_no"]) == (60.0, 90.0, 100.0)
    # all 10 answers equal: no normalisation at all, so "Yes" does not match "yes" (official quirk)
    write(results, [{"question_id": 1, "answer": "red"}, {"question_id": 2, "answer": "two"},
                    {"question_id": 3, "answer": "Yes"}])
    code, scores, _ = cli(capsys, "vqa2", "--data-dir", tmp_path, "--split", "val2014", "--predictions", results)
    assert scores["vqa_accuracy"] == 50.0 and scores["vqa_accuracy_yes_no"] == 0.0  # (0.6 + 0.9 + 0) / 3


# -- SNLI-VE -----------------------------------------------------------------------------------------


def test_snli_ve_accuracy_per_label(tmp_path, capsys):
    gold = ["entailment", "neutral", "contradiction", "entailment"]
    write_jsonl(tmp_path / "snli_ve_dev.jsonl", [{"Flickr30K_ID": "100", "pairID": f"100.jpg#{k}", "sentence2": "h.",
                                                  "gold_label": g} for k, g in enumerate(gold)])
    predicted = ["entailment", "contradiction", "contradiction", "neutral"]
    path = write(tmp_path / "p.json", [{"pairID": f"100.jpg#{k}", "prediction": p} for k, p in enumerate(predicted)])
    code, scores, _ = cli(capsys, "snli_ve", "--data-dir", tmp_path, "--split", "dev", "--predictions", path)
    assert code == 0
    # right: #0 (entailment) and #2 (contradiction) -> 2/4; entailment 1 of 2, neutral 0 of 1, contradiction 1 of 1
    assert scores["accuracy"] == 50.0 and scores["num_examples"] == 4.0
    assert (scores["accuracy_entailment"], scores["accuracy_neutral"], scores["accuracy_contradiction"]) == (50.0, 0.0, 100.0)
    write(path, [{"pairID": "100.jpg#0", "prediction": "yes"}, *[{"pairID": f"100.jpg#{k}", "prediction": "neutral"}
                                                                for k in (1, 2, 3)]])
    code, _, err = cli(capsys, "snli_ve", "--data-dir", tmp_path, "--split", "dev", "--predictions", path)
    assert code == 2 and "prediction 'yes' is not one of entailment" in err[0]


# -- RefCOCO -----------------------------------------------------------------------------------------


def test_rec_iou_exactly_one_half_is_a_hit(tmp_path, capsys):
    native.write_refcoco(str(tmp_path))
    # sent 2 (testA) and sent 3 (testB) refer to annotation 71, xywh [20, 10, 15, 15] -> xyxy [20, 10, 35, 25]
    predictions = write(tmp_path / "p.json", [
        # the top half: intersection 15 x 7.5 = 112.5, union 225 -> IoU exactly 0.5: right
        {"sent_id": 2, "ref_id": 1, "image_id": 7, "box": [20, 10, 35, 17.5], "score": 1.0},
        # a little less than half: 15 x 7.4 / 225 = 0.493: wrong
        {"sent_id": 3, "ref_id": 2, "image_id": 7, "box": [20, 10, 35, 17.4], "score": 1.0}])
    for benchmark in ("refcoco", "fiber_refcoco"):  # the FIBER dense builder writes the same rows
        code, scores, _ = cli(capsys, benchmark, "--data-dir", tmp_path, "--split", "testA,testB", "--predictions", predictions)
        assert code == 0
        assert (scores["acc@0.5"], scores["acc@0.5_testA"], scores["acc@0.5_testB"]) == (50.0, 100.0, 0.0)
    # RefCOCOg (umd): split test holds sent 5 (annotation 71); a box shifted right by 5 px:
    # intersection 10 x 15 = 150, union 225 + 225 - 150 = 300 -> 0.5: right
    write(predictions, [{"sent_id": 5, "ref_id": 4, "image_id": 7, "box": [25, 10, 40, 25], "score": 0.0}])
    code, scores, _ = cli(capsys, "refcocog", "--data-dir", tmp_path, "--split", "test", "--predictions", predictions)
    assert scores["acc@0.5"] == 100.0 and scores["acc@0.5_test"] == 100.0
    # wrong coverage: testA alone has only sent 2
    code, _, err = cli(capsys, "refcoco", "--data-dir", tmp_path, "--split", "testA", "--predictions", predictions)
    assert code == 2 and len(err) == 2 and "1 missing, e.g. ['2']; 1 unknown, e.g. ['5']" in err[0]
    write(predictions, [{"sent_id": 2, "box": [20, 10, 35]}])
    code, _, err = cli(capsys, "refcoco", "--data-dir", tmp_path, "--split", "testA", "--predictions", predictions)
    assert code == 2 and "sent_id 2: 'box' must be [x1, y1, x2, y2]" in err[0]


# -- VCR ---------------------------------------------------------------------------------------------


def vcr_row(annot_id, answer, rationale):
    return {"objects": ["person"], "img_fn": "m/1.jpg", "metadata_fn": "m/1.json", "question": ["why", "?"],
            "answer_choices": [["a"], ["b"], ["c"], ["d"]], "rationale_choices": [["e"], ["f"], ["g"], ["h"]],
            "answer_label": answer, "rationale_label": rationale, "annot_id": annot_id}


def test_vcr_q2ar_needs_both_right(tmp_path, capsys):
    write_jsonl(tmp_path / "val.jsonl", [vcr_row("val-0", 0, 1), vcr_row("val-1", 2, 3), vcr_row("val-2", 1, 1)])
    path = write(tmp_path / "p.json", [
        {"annot_id": "val-0", "answer": 0, "rationale": 2},   # Q->A right, QA->R wrong
        {"annot_id": "val-1", "answer": 2, "rationale": 3},   # both right
        {"annot_id": "val-2", "answer": 0, "rationale": 1}])  # Q->A wrong, QA->R right
    code, scores, _ = cli(capsys, "vcr", "--data-dir", tmp_path, "--split", "val", "--predictions", path)
    assert code == 0
    assert scores["q2a"] == pytest.approx(200 / 3) and scores["qa2r"] == pytest.approx(200 / 3)
    assert scores["q2ar"] == pytest.approx(100 / 3)  # only val-1
    write(path, [{"annot_id": "val-0", "answer": 4, "rationale": 0}, {"annot_id": "val-1", "answer": 0, "rationale": 0},
                 {"annot_id": "val-2", "answer": 0, "rationale": 0}])
    code, _, err = cli(capsys, "vcr", "--data-dir", tmp_path, "--split", "val", "--predictions", path)
    assert code == 2 and "val-0: answer and rationale must be 0..3" in err[0]


# -- retrieval ---------------------------------------------------------------------------------------


def write_two_image_karpathy(root) -> None:
    images = [{"filename": f"{n}.jpg", "imgid": k, "split": "test", "sentids": sentids,
               "sentences": [{"raw": f"caption {s}", "tokens": [], "imgid": k, "sentid": s} for s in sentids]}
              for k, (n, sentids) in enumerate([(1, [10, 11]), (2, [20, 21])])]
    images.append({"filename": "3.jpg", "imgid": 2, "split": "train", "sentids": [30],
                   "sentences": [{"raw": "train caption", "tokens": [], "imgid": 2, "sentid": 30}]})
    write(os.path.join(root, "dataset_flickr30k.json"), {"images": images, "dataset": "flickr30k"})


def test_retrieval_two_images_four_captions(tmp_path, capsys):
    write_two_image_karpathy(tmp_path)
    ranking = {"top_k": 10, "text_to_image": [
        {"sentid": 10, "image_ids": [1, 2]},  # image 1 first: rank 0
        {"sentid": 11, "image_ids": [1, 2]},  # rank 0
        {"sentid": 20, "image_ids": [1, 2]},  # its image 2 second: rank 1
        {"sentid": 21, "image_ids": [2, 1]}],  # rank 0
        "image_to_text": [
        {"image_id": 1, "sentids": [11, 20, 21, 10]},  # its SECOND caption first: any caption counts, rank 0
        {"image_id": 2, "sentids": [10, 11, 20, 21]}]}  # its first caption third: rank 2
    path = write(tmp_path / "ranking.json", ranking)
    code, scores, _ = cli(capsys, "flickr30k_retrieval", "--data-dir", tmp_path, "--split", "test", "--predictions", path)
    assert code == 0
    assert (scores["ir_r1"], scores["ir_r5"], scores["ir_r10"]) == (75.0, 100.0, 100.0)  # 3 of 4 texts at rank 0
    assert (scores["tr_r1"], scores["tr_r5"], scores["tr_r10"]) == (50.0, 100.0, 100.0)  # image 1 of 2 at rank 0
    assert scores["r_mean"] == 87.5  # (75 + 100 + 100 + 50 + 100 + 100) / 6
    assert (scores["num_images"], scores["num_captions"]) == (2.0, 4.0)
    # a list must hold min(10, candidates) ids: 2 images here
    ranking["text_to_image"][0]["image_ids"] = [1]
    write(path, ranking)
    code, _, err = cli(capsys, "flickr30k_retrieval", "--data-dir", tmp_path, "--split", "test", "--predictions", path)
    assert code == 2 and "sentid 10: image_ids has 1 ids, fewer than 2" in err[0]
    ranking["text_to_image"][0]["image_ids"] = [1, 3]  # image 3 is a train image
    write(path, ranking)
    code, _, err = cli(capsys, "flickr30k_retrieval", "--data-dir", tmp_path, "--split", "test", "--predictions", path)
    assert code == 2 and "unknown ids ['3']" in err[0]
    del ranking["image_to_text"][1]
    ranking["text_to_image"][0]["image_ids"] = [1, 2]
    write(path, ranking)
    code, _, err = cli(capsys, "flickr30k_retrieval", "--data-dir", tmp_path, "--split", "test", "--predictions", path)
    assert code == 2 and "(image_to_text) by image_id (1 missing, e.g. ['2']" in err[0]


def test_ranking_lists_break_ties_as_the_metric_counts_ranks():
    from vlfw.metrics.retrieval import ranks_from_lists, recall_from_ranks, retrieval_recall_at_k, top_candidates

    # 3 images with the SAME embedding: every text ties with all images; ranks count strictly higher
    # scores, so every text has rank 0, and every image rank 0 too (its captions tie with all texts)
    images = torch.ones(3, 2)
    texts = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    owners = torch.tensor([2, 1, 0, 2])
    text_lists, image_lists = top_candidates(images, texts, owners, top_n=10)
    assert text_lists.shape == (4, 3) and image_lists.shape == (3, 4)
    assert text_lists[:, 0].tolist() == [2, 1, 0, 2]  # own image first among the tied
    # image 0's only caption is text 2 (score 1 like all); image 2 owns texts 0 and 3 (scores 1, 1)
    assert image_lists[0, 0].item() == 2 and image_lists[2, 0].item() in (0, 3)
    expected = retrieval_recall_at_k(images, texts, owners, ks=(1,))
    text_ranks = ranks_from_lists(text_lists.tolist(), [{int(o)} for o in owners])
    image_ranks = ranks_from_lists(image_lists.tolist(), [{t for t in range(4) if owners[t] == i} for i in range(3)])
    assert recall_from_ranks(text_ranks, image_ranks, (1,)) == expected == {"ir_r1": 100.0, "tr_r1": 100.0, "r_mean": 100.0}


# -- Flickr30k Entities ----------------------------------------------------------------------------


def test_grounding_any_box_recall(tmp_path, capsys):
    native.write_flickr30k_entities(str(tmp_path))
    # phrases of 500.jpg: 500_1_0 "A man" (chain 1: [2, 3, 12, 11]); 500_1_1 "a dog" and 500_2_0 "The dog"
    # (chain 2: [20, 10, 35, 25] and [21, 11, 30, 20]); "the rain" is notvisual (not scored)
    far = [100, 100, 110, 110]
    predictions = write(tmp_path / "p.json", [
        {"id": "500_1_0", "boxes": [far, [2, 3, 12, 11]]},       # hit at 2: R@5, R@10
        {"id": "500_1_1", "boxes": [[21, 11, 30, 20]]},          # the smaller chain-2 box exactly: R@1 (any box;
        #                                   against the union box [20, 10, 35, 25] it would be 81 / 225 = 0.36)
        {"id": "500_2_0", "boxes": [far] * 6 + [[20, 10, 35, 25]]}])  # hit at 7: R@10 only
    for benchmark in ("flickr30k_entities", "fiber_flickr30k_entities"):
        code, scores, _ = cli(capsys, benchmark, "--data-dir", tmp_path, "--split", "test", "--predictions", predictions)
        assert code == 0
        assert scores["recall@1"] == pytest.approx(100 / 3) and scores["recall@5"] == pytest.approx(200 / 3)
        assert scores["recall@10"] == 100.0 and scores["num_phrases"] == 3.0


# -- captioning --------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap's PTB tokenizer needs Java")
def test_captioning_results_file(tmp_path):
    write_two_image_karpathy(tmp_path)
    path = write(tmp_path / "captions.json", [{"image_id": 1, "caption": "caption 11"},
                                              {"image_id": 2, "caption": "caption 21"}])
    scores = score_captioning("flickr30k_captioning", str(tmp_path), "test", path, extra=())
    # each caption is one of its image's references: every n-gram of length <= 2 matches, and the
    # length equals the closest reference's: BLEU-1 = BLEU-2 = 100
    assert scores["bleu1"] == pytest.approx(100.0, abs=1e-3) and scores["bleu2"] == pytest.approx(100.0, abs=1e-3)
    assert scores["num_images"] == 2.0


def test_captioning_coverage_is_checked_before_java(tmp_path, capsys):
    write_two_image_karpathy(tmp_path)
    path = write(tmp_path / "captions.json", [{"image_id": 1, "caption": "x"}, {"image_id": 3, "caption": "y"}])
    code, _, err = cli(capsys, "flickr30k_captioning", "--data-dir", tmp_path, "--split", "test", "--predictions", path)
    assert code == 2 and "1 missing, e.g. ['2']; 1 unknown, e.g. ['3']" in err[0]


# -- bad files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("benchmark,split,writer", [
    ("snli_ve", "dev", native.write_snli_ve), ("refcoco", "testA", native.write_refcoco),
    ("vcr", "val", native.write_vcr), ("coco_retrieval", "test", lambda r: native.write_karpathy(r, "coco")),
    ("flickr30k_entities", "test", native.write_flickr30k_entities)])
def test_bad_and_missing_files_are_one_line(tmp_path, capsys, benchmark, split, writer):
    writer(str(tmp_path))
    code, _, err = cli(capsys, benchmark, "--data-dir", tmp_path, "--split", split, "--predictions", tmp_path / "none.json")
    assert code == 2 and err[0] == f"vlfw_score: error: predictions file not found: {tmp_path / 'none.json'}"
    truncated = write(tmp_path / "p.json", '[{"id": 1, ')
    code, _, err = cli(capsys, benchmark, "--data-dir", tmp_path, "--split", split, "--predictions", truncated)
    assert code == 2 and len(err) == 2 and "p.json: not valid JSON at line 1" in err[0]
    wrong = write(tmp_path / "p.json", {"predictions": []} if benchmark != "coco_retrieval" else [])
    code, _, err = cli(capsys, benchmark, "--data-dir", tmp_path, "--split", split, "--predictions", wrong)
    assert code == 2 and "p.json: expected" in err[0]
    empty = write(tmp_path / "p.json", [] if benchmark != "coco_retrieval" else {"text_to_image": [], "image_to_text": []})
    code, _, err = cli(capsys, benchmark, "--data-dir", tmp_path, "--split", split, "--predictions", empty)
    assert code == 2 and "must cover exactly the" in err[0] and "0 unknown" in err[0]
    code, _, err = cli(capsys, benchmark, "--data-dir", tmp_path / "nowhere", "--split", split, "--predictions", empty)
    assert code == 2 and "is not a directory" in err[0]


def test_unknown_benchmark_is_one_line_with_close_names(tmp_path, capsys):
    code, _, err = cli(capsys, "refcoco+", "--data-dir", tmp_path, "--split", "val", "--predictions", tmp_path / "p.json")
    assert code == 2 and len(err) == 2
    assert err[0].startswith("vlfw_score: error: no scorer for benchmark 'refcoco+'") and "Did you mean: refcoco" in err[0]


# -- agreement with the in-run metrics on a tiny Shapes-world evaluation --------------------------------


def noise(index: int, *shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(int(index) * 7919 + seed))


class PseudoRandomModel(torch.nn.Module):
    """Outputs drawn from a generator seeded by each sample's index (so the metrics see varied hits)."""

    def forward(self, batch):
        index = [int(i) for i in batch["index"]]
        if "answer_input_ids" in batch:  # VCR
            return {"answer_logits": torch.stack([noise(i, 4) for i in index]),
                    "rationale_logits": torch.stack([noise(i, 4, seed=1) for i in index])}
        if "text_mask" in batch:
            return {"image_embeddings": torch.stack([noise(i, 8) for i in index]),
                    "text_embeddings": torch.stack([noise(i, batch["input_ids"].shape[1], 8, seed=1) for i in index])}
        if "region_boxes" in batch:
            return {"region_logits": torch.stack([noise(i, batch["region_boxes"].shape[1]) for i in index])}
        return {"logits": torch.stack([noise(i, self.num_answers) for i in index])}


@pytest.mark.parametrize("name,split,native_split,visual", [
    ("vqa2", "val", "val2014", "images"), ("refcoco", "test", "testA,testB", "regions"),
    ("refcoco_plus", "test", "testA,testB", "images"), ("coco_retrieval", "test", "test", "images"),
    ("flickr30k_retrieval", "test", "test", "regions"), ("snli_ve", "val", "dev", "images"), ("vcr", "val", "val", "images"),
    ("flickr30k_entities", "test", "test", "regions")])
def test_file_scores_equal_the_in_run_metrics(shapes_tiny_root, tmp_path, name, split, native_split, visual):
    import vlfw.components  # noqa: F401  (the core builders and metrics)
    from vlfw.registry import DATASETS, METRICS
    from vlfw.runner.distributed import DistributedContext
    from vlfw.runner.evaluation import Evaluator
    from vlfw.world import benchmark_paths

    builder = DATASETS.get(name)({"source": "shapes", "shapes": {"size": "tiny", "seed": 0}, "visual": visual,
                                  "processors": {"image": {"params": {"size": 32}}}}, name)
    info = builder.task_info()
    metrics = [METRICS.get(m["type"])(task_info=info, **m["params"]) for m in builder.config.metrics]
    evaluator = Evaluator({name: builder}, {name: metrics}, DistributedContext(), batch_size=4, progress_bar=False,
                          task_infos={name: info}, predictions_dir=tmp_path)
    model = PseudoRandomModel()
    model.num_answers = len(info.answers or info.labels or ())
    in_run = evaluator.evaluate(model, split, write_predictions=True)
    data_dir = str(benchmark_paths(shapes_tiny_root, name)["data_dir"])
    scores = score_file(name, data_dir, native_split, str(tmp_path / builder.predictions_file(split)))
    from_file = {f"{split}/{name}/{k}": v for k, v in scores.items()}
    assert {key: from_file.get(key) for key in in_run} == in_run  # every in-run value, exactly
    primary = in_run[f"{split}/{name}/{metrics[0].primary}"]
    assert 0.0 < primary < 100.0 or name == "vcr"  # neither all right nor all wrong: the comparison means something


def shapes_evaluator(name: str, directory, visual: str = "images"):
    import vlfw.components  # noqa: F401
    from vlfw.registry import DATASETS, METRICS
    from vlfw.runner.distributed import DistributedContext
    from vlfw.runner.evaluation import Evaluator

    builder = DATASETS.get(name)({"source": "shapes", "shapes": {"size": "tiny", "seed": 0}, "visual": visual,
                                  "processors": {"image": {"params": {"size": 32}}}}, name)
    info = builder.task_info()
    metrics = [METRICS.get(m["type"])(task_info=info, **m["params"]) for m in builder.config.metrics]
    evaluator = Evaluator({name: builder}, {name: metrics}, DistributedContext(), batch_size=4, progress_bar=False,
                          task_infos={name: info}, predictions_dir=directory)
    return builder, metrics, evaluator


@pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap's PTB tokenizer needs Java")
def test_caption_file_scores_equal_the_in_run_metric(shapes_tiny_root, tmp_path):
    from vlfw.world import benchmark_paths

    name = "flickr30k_captioning"
    builder, _, evaluator = shapes_evaluator(name, tmp_path)
    tokenizer = builder.text_processor
    phrases = [tokenizer(text)["input_ids"][1:-1].tolist() for text in ("a red circle", "two blue squares and a star")]

    class Captioner(torch.nn.Module):
        def generate(self, batch, **options):  # bos, words, sep, then padding the decoder must cut off
            rows = [[tokenizer.cls_id, *phrases[int(i) % 2], tokenizer.sep_id, 7, 7] for i in batch["index"]]
            width = max(len(r) for r in rows)
            return torch.tensor([r + [0] * (width - len(r)) for r in rows])

    in_run = evaluator.evaluate(Captioner(), "test", write_predictions=True)
    rows = json.loads((tmp_path / f"{name}_test.json").read_text())
    assert {r["caption"] for r in rows} == {"a red circle", "two blue squares and a star"}
    data_dir = str(benchmark_paths(shapes_tiny_root, name)["data_dir"])
    scores = score_captioning(name, data_dir, "test", str(tmp_path / f"{name}_test.json"), extra=())
    assert {f"test/{name}/{k}": v for k, v in scores.items() if k != "num_images"} == in_run
    assert 0.0 < in_run[f"test/{name}/cider"]


def test_a_reranked_evaluation_writes_no_ranking_file(shapes_tiny_root, tmp_path):
    builder, metrics, evaluator = shapes_evaluator("coco_retrieval", tmp_path)
    dataset = evaluator.dataset("coco_retrieval", "test")
    batch = builder.collate([dataset[i] for i in range(len(dataset))])
    metric = metrics[0]
    metric.update(batch, PseudoRandomModel()(batch))
    ranking = builder.split_predictions(dataset, [metric])
    assert len(ranking["image_to_text"]) == len(dataset) and len(ranking["text_to_image"]) == int(batch["text_mask"].sum())
    pools = metric.pools()
    metric.set_ranks(torch.zeros(len(pools.text_to_image), dtype=torch.long), torch.zeros(len(dataset), dtype=torch.long), 2)
    assert builder.split_predictions(dataset, [metric]) is None
