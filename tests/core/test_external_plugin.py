"""A plugin package written only from docs/writing_a_plugin.md, installed with pip, adds a model
and a loss that `vlfw_run model=<its name>` uses."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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
    assert set(files) == {"pyproject.toml", "vlfw_bow/__init__.py"}
    source = tmp_path / "vlfw-bow"
    for name, content in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(content)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, timeout=300)
    env = dict(os.environ, PYTHONPATH=str(target))

    listing = subprocess.run([sys.executable, "-m", "vlfw.cli.list", "models", "losses"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert re.search(r"bow_fusion\s+vlfw-bow 0.1.0", listing.stdout)
    assert re.search(r"soft_cross_entropy\s+vlfw-bow 0.1.0", listing.stdout)

    save_dir = tmp_path / "run"
    run = subprocess.run(
        [sys.executable, "-m", "vlfw.cli.run", f"config={ROOT / 'projects' / 'baselines' / 'shapes_vqa2.yaml'}",
         "model=bow_fusion", "dataset_config.vqa2.losses=[{type: soft_cross_entropy}]",
         "dataset_config.vqa2.shapes.size=tiny", "training.max_updates=3", "training.batch_size=4",
         "training.eval_every=3", "training.checkpoint_every=3", "training.progress_bar=false",
         "run_type=train_val", f"save_dir={save_dir}"],
        env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((save_dir / "metrics.json").read_text())
    assert "val/vqa2/vqa_accuracy" in metrics
    config = (save_dir / "config.yaml").read_text()
    assert "model: bow_fusion" in config and "soft_cross_entropy" in config
