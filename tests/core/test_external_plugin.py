"""A plugin package written only from docs/writing_a_plugin.md, installed with pip, adds a task
type, a head, a dataset builder with its own processor, a model, a loss and a metric, and
`vlfw_run` trains and evaluates them with no edit to vlfw."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FILES = {"pyproject.toml", "vlfw_count/__init__.py", "vlfw_count/task.py", "vlfw_count/data.py",
         "vlfw_count/model.py", "vlfw_count/objectives.py"}


def files_from_docs() -> dict[str, str]:
    text = (ROOT / "docs" / "writing_a_plugin.md").read_text()
    files = {}
    for block in re.findall(r"```(?:toml|python)\n(.*?)```", text, flags=re.S):
        first, rest = block.split("\n", 1)
        match = re.match(r"# file: (\S+)", first)
        if match:
            files[match.group(1)] = rest
    return files


def test_plugin_from_the_docs_installs_and_runs(tmp_path, shapes_tiny_root):
    files = files_from_docs()
    assert set(files) == FILES
    source = tmp_path / "vlfw-count"
    for name, content in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(content)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, timeout=300)
    env = dict(os.environ, PYTHONPATH=str(target))

    listing = subprocess.run([sys.executable, "-m", "vlfw.cli.list", "tasks", "heads", "datasets", "processors",
                              "models", "losses", "metrics"], env=env, capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    for name in ("count", "count_regressor", "vqa_count", "count_target", "bow_count", "count_l1", "count_accuracy"):
        assert re.search(rf"\b{name}\s+vlfw-count 0.1.0", listing.stdout), name

    save_dir = tmp_path / "run"
    run = subprocess.run(
        [sys.executable, "-m", "vlfw.cli.run", "model=bow_count", "datasets=vqa_count",
         "dataset_config.vqa_count.source=shapes", "dataset_config.vqa_count.shapes.size=tiny",
         "dataset_config.vqa_count.processors.count.params.max_count=9",
         "training.max_updates=4", "training.batch_size=4", "training.eval_every=4", "training.checkpoint_every=4",
         "training.progress_bar=false", "logging.tensorboard=false", "run_type=train_val", f"save_dir={save_dir}"],
        env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((save_dir / "metrics.json").read_text())
    assert {"val/vqa_count/accuracy", "val/vqa_count/mean_abs_error"} <= set(metrics)
    assert 0.0 <= metrics["val/vqa_count/accuracy"] <= 100.0
    log = [json.loads(line) for line in (save_dir / "train_log.jsonl").read_text().splitlines()]
    assert any("train/vqa_count/count_l1" in line for line in log)  # the plugin's loss trained the model
    config = (save_dir / "config.yaml").read_text()
    assert "model: bow_count" in config and "count_target" in config

    # a parameter the plugin's processor does not take is one line naming it, at load
    bad = subprocess.run([sys.executable, "-m", "vlfw.cli.run", "model=bow_count", "datasets=vqa_count",
                          "dataset_config.vqa_count.processors.count.params.max_cont=9", f"save_dir={tmp_path / 'x'}"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "max_cont" in bad.stderr and "Traceback" not in bad.stderr
