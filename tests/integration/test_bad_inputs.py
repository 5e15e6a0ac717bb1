"""Bad input of every kind through the real command line (`vlfw.cli.run.main`, in-process; the
plugin cases in a fresh interpreter): exit code 2, exactly one error line naming the key or the
file, no traceback, and a run directory that held a checkpoint left exactly as it was.

The native files are the hand-written fixtures of tests/fixtures/native.py, copied per case and
then corrupted; the model is a tiny late-fusion baseline (vlbert tiny for CC3M pre-training).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import native  # noqa: E402  (tests/fixtures/native.py)

from vlfw.cli.run import main  # noqa: E402

DATASETS = ("vqa2", "coco_retrieval", "nlvr2", "snli_ve", "refcoco", "vcr", "flickr30k_entities", "cc3m")
TINY_MODELS = {
    "late_fusion": ["hidden_size=16", "cnn_channels=[4,8]", "text_layers=1", "text_heads=2"],
    "text_only": ["hidden_size=16", "text_layers=1", "text_heads=2"],
    "vlbert": ["size=tiny"],
}
MARKER = "vlfw-bad-inputs-payload-ran"


def run_args(dataset: str, data: Path, save: Path, *extra: str, model: str = "late_fusion") -> list[str]:
    node = f"dataset_config.{dataset}"
    settings = [f"{node}.source=files", f"{node}.data_dir={data}", f"{node}.processors.image.params.size=32",
                f"{node}.processors.text.params.max_length=24"]
    if dataset == "vqa2":
        settings.append(f"{node}.processors.answer.params.min_count=1")
    return [f"model={model}", f"datasets=[{dataset}]", "run_type=train_val", f"save_dir={save}", *settings,
            *(f"model_config.{model}.{s}" for s in TINY_MODELS[model]),
            f"training.batch_size={1 if dataset == 'vcr' else 2}", "training.max_updates=2", "training.eval_every=0",
            "training.checkpoint_every=1", "training.log_every=1", "training.progress_bar=false",
            "logging.tensorboard=false", *extra]


# -- corruptions of a file under a folder (the case's data, or its run) --------------------------------
def truncate(name: str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / name
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return apply


def replace(name: str, content: str | bytes) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return apply


def append(name: str, text: str) -> Callable[[Path], None]:
    def apply(data: Path) -> None:
        with open(data / name, "a", encoding="utf-8") as handle:
            handle.write(text)
    return apply


def remove(name: str) -> Callable[[Path], None]:
    return lambda data: (data / name).unlink()


def edit_json(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(data: Path) -> None:
        document = json.loads((data / name).read_text())
        change(document)
        (data / name).write_text(json.dumps(document))
    return apply


def object_npy(name: str) -> Callable[[Path], None]:
    return lambda data: np.save(data / name, np.array([{"features": 1}], dtype=object), allow_pickle=True)


class _Payload:
    def __reduce__(self):
        return os.system, (f"touch {MARKER}",)


def payload_npy(name: str) -> Callable[[Path], None]:
    """An `_info.npy` whose pickle would run a command (np.save of an object array, forged)."""
    def apply(data: Path) -> None:
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, {"descr": "|O", "fortran_order": False, "shape": ()})
        (data / name).write_bytes(buffer.getvalue() + pickle.dumps(_Payload(), protocol=2))
    return apply


REGIONS_TSV = ["dataset_config.vqa2.visual=regions", "dataset_config.vqa2.features.format=butd_tsv",
               "dataset_config.vqa2.features.path={data}/features/regions.tsv"]
REGIONS_NPY = ["dataset_config.vqa2.visual=regions", "dataset_config.vqa2.features.format=npy",
               "dataset_config.vqa2.features.path={data}/features/npy"]
VQA_QUESTIONS = "v2_OpenEnded_mscoco_train2014_questions.json"
VQA_ANSWERS = "v2_mscoco_train2014_annotations.json"
TRAIN_IMAGE = "train2014/COCO_train2014_000000000001.jpg"


@dataclass(frozen=True)
class Case:
    """`expect` is a part of the one error line ({data}: the case's data folder, {save}: its save_dir)."""

    id: str
    expect: str
    args: tuple[str, ...] = ()
    dataset: str = "vqa2"
    corrupt: Callable[[Path], None] | None = None
    checkpoint: bool = False  # save_dir: a copy of a finished run, which must stay as it was
    corrupt_run: Callable[[Path], None] | None = None  # applied to that copy
    model: str = "late_fusion"
    plugins: bool = False  # a fresh interpreter with the fake plugin distributions on sys.path


CASES = [
    # -- config: every key family ---------------------------------------------------------------------
    Case("config-unknown-key", "unknown config key 'training.max_update' on the command line",
         ("training.max_update=3",)),
    Case("config-unknown-key-in-a-dataset", "unknown config key 'dataset_config.vqa2.procesors' on the command line",
         ("dataset_config.vqa2.procesors.image.params.size=3",)),
    Case("config-bad-type", "training.batch_size must be an integer (like 32), got 'abc'", ("training.batch_size=abc",)),
    Case("config-list-for-a-number", "training.batch_size must be an integer (like 32), got a list [1, 2]",
         ("training.batch_size=[1,2]",)),
    Case("config-list-for-a-model-number", "model_config.late_fusion.hidden_size must be an integer (like 128), got a list",
         ("model_config.late_fusion.hidden_size=[16,2]",)),
    Case("config-mapping-for-a-boolean", "training.deterministic must be a boolean (like False), got a mapping",
         ("training.deterministic={a: 1}",)),
    Case("config-bad-choice", "training.precision must be one of fp32, bf16, fp16, got 'fp8'", ("training.precision=fp8",)),
    Case("config-bad-dataset-choice", "dataset_config.vqa2.visual must be one of images, regions, got 'pixels'",
         ("dataset_config.vqa2.visual=pixels",)),
    Case("config-bad-number", "optimizer.lr must be a number > 0, got -1", ("optimizer.lr=-1",)),
    Case("config-bad-world-seed", "dataset_config.vqa2.shapes.seed must be an integer >= 0, got -1",
         ("dataset_config.vqa2.shapes.seed=-1",)),
    Case("config-bad-run-type", "run_type must be train, val and test joined by '_'", ("run_type=train_fly",)),
    Case("config-unknown-model", "unknown model 'late_fusin'", ("model=late_fusin",)),
    Case("config-bad-component-type", "dataset_config.vqa2.losses[0].type on the command line: unknown loss 'nope'",
         ("dataset_config.vqa2.losses=[{type: nope}]",)),
    Case("config-bad-callback", "training.callbacks[0] on the command line: unknown callback 'nope'",
         ("training.callbacks=[nope]",)),
    Case("config-unknown-param", "unknown parameter dataset_config.vqa2.losses[0].params.nope on the command line",
         ("dataset_config.vqa2.losses=[{type: soft_bce, params: {nope: 1}}]",)),
    Case("config-param-of-the-wrong-type", "dataset_config.vqa2.processors.text.params.max_length must be an integer",
         ("dataset_config.vqa2.processors.text.params.max_length=[1,2]",)),
    Case("config-dataset-not-in-the-run", "multitask.batch_sizes.nlvr2 on the command line names dataset 'nlvr2'",
         ("multitask.batch_sizes.nlvr2=2",)),
    Case("config-yaml-tag", "could not determine a constructor for the tag",
         ("seed=!!python/object/apply:os.system [true]",)),
    Case("config-unclosed-bracket", "malformed YAML in command-line argument 'datasets=[vqa2'", ("datasets=[vqa2",)),
    Case("config-save-dir-is-a-file", "is an existing file", ("save_dir={data}/" + VQA_QUESTIONS,)),
    Case("config-missing-answer-vocabulary", "/nope.json: cannot read the answer vocabulary",
         ("dataset_config.vqa2.processors.answer.params.vocabulary_path=/nope.json",)),
    # -- native files ---------------------------------------------------------------------------------
    Case("missing-data-dir", "data_dir /nonexistent/vqa does not exist", ("dataset_config.vqa2.data_dir=/nonexistent/vqa",)),
    Case("vqa-missing-annotations", f"{{data}}/{VQA_ANSWERS}", corrupt=remove(VQA_ANSWERS)),
    Case("vqa-truncated-json", f"{{data}}/{VQA_QUESTIONS}: not valid JSON at line 1", corrupt=truncate(VQA_QUESTIONS)),
    Case("vqa-questions-a-list", f"{{data}}/{VQA_QUESTIONS}: expected a JSON object with a top-level 'questions' list, "
         "but the file holds a list", corrupt=replace(VQA_QUESTIONS, "[1, 2]")),
    Case("vqa-annotations-a-list", f"{{data}}/{VQA_ANSWERS}: expected a JSON object with a top-level 'annotations' list",
         corrupt=replace(VQA_ANSWERS, "[]")),
    Case("vqa-questions-not-a-list", f"{{data}}/{VQA_QUESTIONS}: expected a top-level 'questions' list, but 'questions' "
         "is a string", corrupt=edit_json(VQA_QUESTIONS, lambda d: d.update(questions="none"))),
    Case("corrupt-image", f"{{data}}/{TRAIN_IMAGE}: bad image at question_id 100", corrupt=replace(TRAIN_IMAGE, b"\xff\xd8junk")),
    Case("corrupt-image-in-a-loader-worker", f"{{data}}/{TRAIN_IMAGE}: bad image at question_id 100",
         ("training.num_workers=1",), corrupt=replace(TRAIN_IMAGE, b"\xff\xd8junk")),
    Case("missing-image", f"{{data}}/{TRAIN_IMAGE}: bad image at question_id 100", corrupt=remove(TRAIN_IMAGE)),
    Case("butd-tsv-bad-row", "{data}/features/regions.tsv: bad features at line 1 (image_id 1): expected 6 "
         "tab-separated columns", REGIONS_TSV, corrupt=replace("features/regions.tsv", "1\t40\t30\n")),
    # the first file (sorted) is read for the feature size when the run is built, the others when loaded
    Case("npy-object-array", "{data}/features/npy/COCO_test2015_000000000004.npy: cannot load the region features "
         "(Object arrays cannot be loaded when allow_pickle=False)", REGIONS_NPY,
         corrupt=object_npy("features/npy/COCO_test2015_000000000004.npy")),
    Case("npy-truncated", "{data}/features/npy/COCO_train2014_000000000001.npy: bad features at image "
         "COCO_train2014_000000000001", REGIONS_NPY, corrupt=truncate("features/npy/COCO_train2014_000000000001.npy")),
    Case("npy-info-pickle-payload", "refused to unpickle the global", REGIONS_NPY,
         corrupt=payload_npy("features/npy/COCO_train2014_000000000001_info.npy")),
    Case("karpathy-a-list", "{data}/dataset_coco.json: expected a JSON object with a top-level 'images' list, but the "
         "file holds a list", dataset="coco_retrieval", corrupt=replace("dataset_coco.json", "[]")),
    Case("karpathy-entry-not-an-object", "{data}/dataset_coco.json: bad record at images[0]: an image entry must be a "
         "JSON object", dataset="coco_retrieval",
         corrupt=edit_json("dataset_coco.json", lambda d: d["images"].__setitem__(0, 7))),
    Case("nlvr2-bad-json-line", "{data}/train.json: bad record at line 3: not valid JSON", dataset="nlvr2",
         corrupt=append("train.json", "{\"identifier\": \n")),
    Case("snli-ve-line-not-an-object", "{data}/snli_ve_train.jsonl: bad record at line 1: a record must be a JSON object",
         dataset="snli_ve", corrupt=replace("snli_ve_train.jsonl", "[1, 2]\n")),
    Case("refcoco-refs-not-a-list", "{data}/refcoco/refs(unc).p: expected a pickled list of refs, got dict", dataset="refcoco",
         corrupt=replace("refcoco/refs(unc).p", native.py2_pickle({"refs": 1}))),
    Case("refcoco-refs-truncated", "{data}/refcoco/refs(unc).p: cannot unpickle the refs", dataset="refcoco",
         corrupt=truncate("refcoco/refs(unc).p")),
    Case("refcoco-instances-a-list", "{data}/refcoco/instances.json: expected a JSON object with a top-level 'images' list",
         dataset="refcoco", corrupt=replace("refcoco/instances.json", "[]")),
    Case("vcr-metadata-a-list", "{data}/vcr1images/movie1/img1.json", dataset="vcr",
         corrupt=replace("vcr1images/movie1/img1.json", "[1, 2]")),
    Case("flickr30k-entities-bad-xml", "{data}/Annotations/500.xml: bad record at image 500: malformed annotation",
         dataset="flickr30k_entities", corrupt=replace("Annotations/500.xml", "<annotation><size>")),
    Case("cc3m-bad-tsv-row", "{data}/Train_GCC-training.tsv: bad record at line 4: expected 2 tab-separated columns",
         dataset="cc3m", model="vlbert", corrupt=append("Train_GCC-training.tsv", "a caption without its url\n")),
    # -- checkpoints (in a copy of a finished run: nothing of it may change) -----------------------------
    Case("checkpoint-corrupt", "cannot read checkpoint {save}/checkpoints/update_2.pt: it is corrupt",
         ("checkpoint.resume=true", "training.max_updates=4"), checkpoint=True,
         corrupt_run=truncate("checkpoints/update_2.pt")),
    Case("checkpoint-pointer-outside-the-folder", "the checkpoint pointer {save}/checkpoints/last holds '../../elsewhere.pt'",
         ("checkpoint.resume=true", "training.max_updates=4"), checkpoint=True,
         corrupt_run=replace("checkpoints/last", "../../elsewhere.pt\n")),
    Case("checkpoint-of-another-model", "it is a checkpoint of model 'late_fusion' on datasets ['vqa2'], this run is "
         "model 'text_only' on ['vqa2']", ("checkpoint.resume=true", "training.max_updates=4"), checkpoint=True,
         model="text_only"),
    Case("checkpoint-of-another-model-evaluated", "it is a checkpoint of model 'late_fusion' on datasets ['vqa2'], this "
         "run is model 'text_only'", ("checkpoint.resume=true", "run_type=val"), checkpoint=True, model="text_only"),
    Case("checkpoint-save-dir-holds-a-run", "already holds a run", (), checkpoint=True),
    Case("checkpoint-resume-without-one", "checkpoint.resume=true but {save}/checkpoints holds no checkpoint",
         ("checkpoint.resume=true",)),
    Case("checkpoint-pretrained-missing", "checkpoint file not found: /nope.pt", ("checkpoint.pretrained=/nope.pt",)),
    # -- plugins ----------------------------------------------------------------------------------------
    Case("plugin-import-raises", "plugin failed to load: 'bad_inputs_broken' from bad_inputs_broken 0.3 "
         "(bad_inputs_broken): RuntimeError: boom in bad_inputs_broken", ("plugins.strict=true",), plugins=True),
    Case("plugin-default-config-not-a-mapping", "the DEFAULT_CONFIG of model 'bad_inputs_list_config' from "
         "bad_inputs_list_config 0.3", ("model=bad_inputs_list_config",), plugins=True),
]


# -- fixtures ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    """Every benchmark's native files, written once (cases corrupt copies)."""
    root = tmp_path_factory.mktemp("native")
    out = {}
    for name in DATASETS:
        out[name] = root / name
        out[name].mkdir()
        native.WRITERS[name](str(out[name]))
    return out


@pytest.fixture(scope="module")
def finished_run(pristine, tmp_path_factory) -> Path:
    """A finished 2-update VQA run (checkpoints update_1.pt, update_2.pt, best.pt)."""
    save = tmp_path_factory.mktemp("finished") / "run"
    assert main(run_args("vqa2", pristine["vqa2"], save)) == 0
    assert (save / "checkpoints" / "last").read_text().strip() == "update_2.pt"
    return save


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """Two fake-installed plugin distributions: one whose import raises, one whose model's
    DEFAULT_CONFIG is a list."""
    root = tmp_path_factory.mktemp("plugins")
    sources = {
        "bad_inputs_broken": "raise RuntimeError('boom in bad_inputs_broken')\n",
        "bad_inputs_list_config": """
            from vlfw.models.baselines import LateFusionModel
            from vlfw.registry import MODELS

            @MODELS.register("bad_inputs_list_config")
            class ListConfigModel(LateFusionModel):
                DEFAULT_CONFIG = [1, 2]
        """,
    }
    for name, source in sources.items():
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(textwrap.dedent(source))
        info = root / f"{name}-0.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3\n")
        (info / "entry_points.txt").write_text(f"[vlfw.plugins]\n{name} = {name}\n")
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_naming_it(case, pristine, finished_run, plugin_path, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a payload would leave its marker
    data, save = tmp_path / "data", tmp_path / "save"
    shutil.copytree(pristine[case.dataset], data)
    if case.corrupt is not None:
        case.corrupt(data)
    before = None
    if case.checkpoint:
        shutil.copytree(finished_run, save)
        if case.corrupt_run is not None:
            case.corrupt_run(save)
        before = snapshot(save)
    def fill(text: str) -> str:
        return text.replace("{data}", str(data)).replace("{save}", str(save))

    args = run_args(case.dataset, data, save, *map(fill, case.args), model=case.model)

    if case.plugins:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")]),
                   OMP_NUM_THREADS="1")
        result = subprocess.run([sys.executable, "-m", "vlfw.cli.run", *args], capture_output=True, text=True,
                                env=env, timeout=120)
        code, err = result.returncode, result.stderr
    else:
        code = main(args)
        err = capsys.readouterr().err

    errors = [line for line in err.splitlines() if line.startswith("vlfw_run: error:")]
    assert code == 2, err[-3000:]
    assert len(errors) == 1, err[-3000:]
    assert fill(case.expect) in errors[0], errors[0]
    assert "Traceback" not in err
    assert not (tmp_path / MARKER).exists()
    if before is not None:
        assert snapshot(save) == before
