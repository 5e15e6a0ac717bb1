"""vlfw.load / vlfw_predict / vlfw_extract on tiny trained runs of the Shapes world.

The predictor is fed what a user has (image files of the world, the question text) and must give
exactly what evaluation gives on the same samples: the answers of the run's own prediction files
(written by the evaluator), and for every task the same argmax / box / caption / embeddings as an
evaluator-style pass over the dataset's records."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import vlfw
from vlfw.cli.extract import main as extract_main
from vlfw.cli.predict import main as predict_main
from vlfw.config import load_config
from vlfw.datasets.nlvr2 import image_folder, image_stems
from vlfw.datasets.vqa2 import image_file
from vlfw.errors import DataError
from vlfw.metrics.rec import masked_region_logits
from vlfw.runner import run

ROOT = Path(__file__).resolve().parents[2]
TINY = ["training.batch_size=8", "training.max_updates=4", "training.eval_every=4", "training.checkpoint_every=4",
        "training.progress_bar=false", "run_type=train_val_test"]


def train(save_dir: Path, config: str, datasets: list[str], *extra: str) -> Path:
    """A tiny run of a recipe, in this process (as vlfw_run runs it)."""
    args = [f"config={ROOT / config}", f"save_dir={save_dir}", *TINY,
            *[f"dataset_config.{d}.shapes.size=tiny" for d in datasets], *extra]
    run(load_config(args))
    return save_dir


@pytest.fixture(scope="module")
def vlbert_run(tmp_path_factory, shapes_tiny_root) -> Path:
    """VL-BERT tiny (region features) on VQA v2, NLVR2, SNLI-VE and RefCOCO+ (its multi-task recipe)."""
    return train(tmp_path_factory.mktemp("vlbert") / "run", "projects/multitask/vlbert_shapes.yaml",
                 ["vqa2", "nlvr2", "snli_ve", "refcoco_plus"])


@pytest.fixture(scope="module")
def vlmo_run(tmp_path_factory, shapes_tiny_root) -> Path:
    """VLMo tiny (images) on VQA v2, NLVR2, SNLI-VE and COCO retrieval."""
    return train(tmp_path_factory.mktemp("vlmo") / "run", "projects/multitask/vlmo_shapes.yaml",
                 ["vqa2", "nlvr2", "snli_ve", "coco_retrieval"])


@pytest.fixture(scope="module")
def captioning_run(tmp_path_factory, shapes_tiny_root) -> Path:
    return train(tmp_path_factory.mktemp("caption") / "run", "projects/baselines/shapes_coco_captioning.yaml",
                 ["coco_captioning"], "model_config.caption_baseline.hidden_size=32",
                 "dataset_config.coco_captioning.generation.num_beams=2",
                 "dataset_config.coco_captioning.generation.max_length=8")


def evaluator_pass(predictor, name: str, split: str = "val", generate: bool = False):
    """(batch, outputs) pairs over the split's records, as the Evaluator computes them."""
    builder = predictor.builders[name]
    loader = DataLoader(builder.build(split), batch_size=5, shuffle=False, collate_fn=builder.collate)
    options = dict(predictor.config.dataset_config[name].get("generation") or {})
    with torch.inference_mode():
        for batch in loader:
            yield batch, ({"generated_ids": predictor.model.generate(batch, **options)} if generate
                          else predictor.model(batch))


def raw_inputs(predictor, name: str, records: list[dict]) -> list[tuple[list[str], dict]]:
    """What a user would pass: the world's image files and the record's text."""
    builder = predictor.builders[name]
    paths = builder.paths
    out = []
    for r in records:
        if name == "vqa2":
            out.append(([image_file(paths.image_dir, r["subset"], r["image_id"])], {"question": r["question"]}))
        elif name == "nlvr2":
            folder = image_folder(paths.image_dir, r["native"], r["directory"])
            out.append(([os.path.join(folder, f"{s}.png") for s in image_stems(r["identifier"])],
                        {"statement": r["sentence"]}))
        elif name == "snli_ve":
            out.append(([os.path.join(builder.image_folder(), f"{r['image_id']}.jpg")], {"hypothesis": r["hypothesis"]}))
        elif "refcoco" in name:
            out.append(([os.path.join(paths.image_dir, "train2014", r["file_name"])], {"expression": r["text"]}))
        else:
            out.append(([r["path"]], {"texts": r["captions"]}))
    return out


def test_predictor_equals_the_evaluator_on_region_features(vlbert_run):
    predictor = vlfw.load(vlbert_run)
    assert predictor.methods() == {"vqa": ["vqa2"], "nlvr2": ["nlvr2"], "entailment": ["snli_ve"],
                                   "ground": ["refcoco_plus"]}
    for name in ("vqa2", "nlvr2", "snli_ve", "refcoco_plus"):
        records = list(predictor.builders[name].records("val"))
        inputs = raw_inputs(predictor, name, records)
        if name == "vqa2":
            got = [r[0]["answer"] for r in predictor.vqa([i[0][0] for i in inputs], [i[1]["question"] for i in inputs])]
        elif name == "nlvr2":
            got = [r["prediction"] for r in predictor.nlvr2([i[0][0] for i in inputs], [i[0][1] for i in inputs],
                                                             [i[1]["statement"] for i in inputs])]
        elif name == "snli_ve":
            got = [r["label"] for r in predictor.entailment([i[0][0] for i in inputs], [i[1]["hypothesis"] for i in inputs])]
        else:
            got = [r["box"] for r in predictor.ground([i[0][0] for i in inputs], [i[1]["expression"] for i in inputs])]
        expected = []
        info = predictor.task_infos[name]
        for batch, outputs in evaluator_pass(predictor, name):
            if name == "refcoco_plus":
                choice = masked_region_logits(outputs["region_logits"], batch["region_mask"]).argmax(-1)
                expected += [[round(float(v), 2) for v in batch["region_boxes"][n, c]] for n, c in enumerate(choice)]
            else:
                best = outputs["logits"].argmax(-1).tolist()
                labels = info.answers if name == "vqa2" else info.labels
                expected += [labels[b] == "True" if name == "nlvr2" else labels[b] for b in best]
        assert got == expected, name
        assert len(got) == len(records) > 0


def test_predictor_answers_equal_the_runs_prediction_files(vlbert_run):
    """The run's evaluator wrote test predictions with the best checkpoint: the predictor on the
    same test questions, fed image files and text, answers the same."""
    predictor = vlfw.load(vlbert_run)
    written = {r["question_id"]: r["answer"] for r in json.loads((vlbert_run / "predictions" / "vqa2_test.json").read_text())}
    records = list(predictor.builders["vqa2"].records("test"))
    inputs = raw_inputs(predictor, "vqa2", records)
    answers = predictor.vqa([i[0][0] for i in inputs], [i[1]["question"] for i in inputs], top_k=1)
    assert {r["question_id"]: a[0]["answer"] for r, a in zip(records, answers)} == written
    lines = (vlbert_run / "predictions" / "nlvr2_test.csv").read_text().split()
    written = dict(line.split(",") for line in lines if not line.startswith("identifier"))
    records = list(predictor.builders["nlvr2"].records("test"))
    inputs = raw_inputs(predictor, "nlvr2", records)
    got = predictor.nlvr2([i[0][0] for i in inputs], [i[0][1] for i in inputs], [i[1]["statement"] for i in inputs])
    assert {r["identifier"]: str(g["prediction"]) for r, g in zip(records, got)} == written


def test_predictor_equals_the_evaluator_on_images_and_retrieval(vlmo_run):
    predictor = vlfw.load(vlmo_run)
    assert set(predictor.methods()) == {"vqa", "nlvr2", "entailment", "retrieval"}
    for name in ("vqa2", "nlvr2", "snli_ve"):
        records = list(predictor.builders[name].records("val"))[:12]
        inputs = raw_inputs(predictor, name, records)
        samples = predictor.samples(name, inputs)
        reference = [predictor.builders[name].build("val")[i] for i in range(len(records))]
        for a, b in zip(samples, reference):  # the same pixels and tokens as the dataset's own samples
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["input_ids"], b["input_ids"])
    name = "coco_retrieval"
    records = list(predictor.builders[name].records("val"))
    index = predictor.retrieval().add_images([r["path"] for r in records], ids=[str(r["image_id"]) for r in records])
    captions = [c for r in records for c in r["captions"]]
    index.add_texts(captions)
    images, texts = [], []
    for batch, outputs in evaluator_pass(predictor, name):
        images.append(outputs["image_embeddings"])
        texts.append(outputs["text_embeddings"][batch["text_mask"]])
    torch.testing.assert_close(index.image_embeddings, torch.cat(images), rtol=0, atol=1e-5)
    torch.testing.assert_close(index.text_embeddings, torch.cat(texts), rtol=0, atol=1e-5)
    # a search ranks the indexed images by text . image
    query = captions[0]
    scores = torch.cat(texts)[0] @ torch.cat(images).T
    ranking = index.search(query, k=3)
    assert [r["id"] for r in ranking] == [str(records[i]["image_id"]) for i in scores.argsort(descending=True)[:3]]
    path = vlmo_run / "index.safetensors"
    index.save(path)
    again = type(index).load(predictor, path, anchor=records[0]["path"])
    assert again.image_ids == index.image_ids and torch.equal(again.text_embeddings, index.text_embeddings)
    assert again.search(query, k=3) == ranking


def test_caption_equals_the_evaluators_generation(captioning_run):
    from vlfw.metrics.captioning import CaptionMetrics

    predictor = vlfw.load(captioning_run)
    name = "coco_captioning"
    records = list(predictor.builders[name].records("val"))[:6]
    got = predictor.caption([r["path"] for r in records])
    reader = CaptionMetrics(task_info=predictor.task_infos[name])
    expected = []
    for _, outputs in evaluator_pass(predictor, name, generate=True):
        expected += [reader.decode(ids) for ids in outputs["generated_ids"]]
    assert got == expected[: len(records)]
    assert predictor.caption(records[0]["path"], num_beams=1) == predictor.caption(records[0]["path"], num_beams=1)


def predict_cli(*args: str):
    return subprocess.run([sys.executable, "-m", "vlfw.cli.predict", *args], capture_output=True, text=True,
                          timeout=300)


def test_vlfw_predict_prints_answers_and_draws_pictures(vlbert_run, tmp_path, capsys):
    predictor = vlfw.load(vlbert_run)
    record = list(predictor.builders["refcoco_plus"].records("val"))[0]
    image = os.path.join(predictor.builders["refcoco_plus"].paths.image_dir, "train2014", record["file_name"])
    done = predict_cli(str(vlbert_run), "--task", "ground", "--image", image, "--text", record["text"], "--json",
                       "--visualize", str(tmp_path / "ground.png"))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["box"] == predictor.ground(image, record["text"])["box"]
    picture = Image.open(tmp_path / "ground.png")
    assert picture.width >= 384 and picture.height > picture.width  # the enlarged image and the text under it
    code = predict_main([str(vlbert_run), "--task", "vqa", "--image", image, "--question", "what color is the circle?",
                         "--visualize", str(tmp_path / "vqa.png")])
    assert code == 0 and "Q: what color is the circle?" in capsys.readouterr().out
    assert Image.open(tmp_path / "vqa.png").size[0] >= 384


@pytest.mark.parametrize("case", ["missing_image", "not_an_image", "other_model", "unknown_task", "task_not_trained",
                                  "no_config", "two_images_needed"])
def test_vlfw_predict_bad_input_is_one_line(case, vlbert_run, captioning_run, tmp_path, capsys, shapes_tiny_root):
    image = str(sorted(Path(shapes_tiny_root, "coco", "val2014").glob("*.jpg"))[0])
    base = [str(vlbert_run), "--task", "vqa", "--image", image, "--text", "what color is the circle?"]
    args = {
        "missing_image": [str(vlbert_run), "--task", "vqa", "--image", str(tmp_path / "nope.jpg"), "--text", "q"],
        "not_an_image": [str(vlbert_run), "--task", "vqa", "--image", str(vlbert_run / "config.yaml"), "--text", "q"],
        "other_model": [*base, "--checkpoint", str(captioning_run / "checkpoints" / "best.pt")],
        "unknown_task": [str(vlbert_run), "--task", "vqq", "--image", image, "--text", "q"],
        "task_not_trained": [str(vlbert_run), "--task", "caption", "--image", image],
        "no_config": [str(tmp_path), "--task", "vqa", "--image", image, "--text", "q"],
        "two_images_needed": [str(vlbert_run), "--task", "nlvr2", "--image", image, "--text", "q"],
    }[case]
    assert predict_main(args) == 2  # in-process: the entry point's own test is the one above
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("vlfw_predict: error: ") and "Traceback" not in err
    expect = {"missing_image": "image not found", "not_an_image": "not an image format",
              "other_model": "checkpoint of model 'caption_baseline'",
              "unknown_task": "did you mean", "task_not_trained": "no dataset for task",
              "no_config": "no config.yaml", "two_images_needed": "2 images"}[case]
    assert expect in lines[0].lower(), lines[0]


def test_extract_regions_with_a_torchvision_detector(tmp_path, shapes_tiny_root, vlbert_run):
    """A detector with local (here: random) weights writes both feature layouts; the builders'
    readers read them back; a model trained on other features says so."""
    import torchvision

    from vlfw.datasets.readers import ButdTsvReader, NpyFeatureReader
    from vlfw.inference import Regions

    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                                               num_classes=5)
    weights = tmp_path / "detector.pth"
    torch.save(model.state_dict(), weights)
    images = tmp_path / "images"
    images.mkdir()
    source = sorted(Path(shapes_tiny_root, "coco", "val2014").glob("*.jpg"))[:2]
    for path in source:
        (images / path.name).write_bytes(path.read_bytes())
    for fmt in ("npy", "butd_tsv"):
        code = extract_main(["regions", "--images", str(images), "--out", str(tmp_path / fmt), "--detector",
                             "fasterrcnn_mobilenet_v3_large_320_fpn", "--weights", str(weights), "--format", fmt,
                             "--max-regions", "12", "--min-regions", "3"])
        assert code == 0
    stems = [p.stem for p in source]
    npy = NpyFeatureReader(str(tmp_path / "npy"), max_regions=36)
    tsv = ButdTsvReader([str(tmp_path / "butd_tsv" / "features.tsv")], max_regions=36)
    for stem in stems:
        a, b = npy.read(stem, stem), tsv.read(stem, stem)
        assert 3 <= len(a["region_features"]) <= 12 and a["region_features"].shape[1] == 1024
        assert torch.equal(a["region_features"], b["region_features"]) and torch.equal(a["region_boxes"], b["region_boxes"])
        assert (a["region_boxes"][:, 2] <= 128.01).all() and a["region_class_probs"].shape[1] == 5
    predictor = vlfw.load(vlbert_run)
    regions = Regions(a["region_features"], a["region_boxes"], 128, 128)
    with pytest.raises(DataError, match="1024-d"):
        predictor.vqa(regions, "what color is the circle?")


def test_fiber_dense_boxes_equal_the_runs_prediction_file(tmp_path, shapes_tiny_root):
    """FIBER's dense head predicts boxes (no candidates): the predictor's box for each test
    expression, from the image file and the text, is the one the evaluator wrote."""
    run = train(tmp_path / "fiber", "projects/fiber/configs/rec/shapes.yaml", ["fiber_refcoco_plus"],
                "training.batch_size=4", "training.max_updates=2", "dataset_config.fiber_refcoco_plus.max_samples=6")
    predictor = vlfw.load(run)
    assert predictor.methods() == {"ground": ["fiber_refcoco_plus"]}
    written = json.loads((run / "predictions" / "fiber_refcoco_plus_test.json").read_text())
    records = list(predictor.builders["fiber_refcoco_plus"].records("test"))
    inputs = raw_inputs(predictor, "fiber_refcoco_plus", records)
    got = predictor.ground([i[0][0] for i in inputs], [i[1]["expression"] for i in inputs])
    assert [g["box"] for g in got] == [w["box"] for w in written] and len(got) == len(records) > 0
