"""Run reports: plots of a run's training log and a side-by-side table of several runs.

A run directory (the runner's `save_dir`) holds `train_log.jsonl`, one JSON object per line:
``{"update": 100, "kind": "train", "train/<dataset>/<loss term>": ..., "train/lr": ...}`` for
training windows and ``{"update": 500, "kind": "val", "val/<dataset>/<metric>": ...}`` for
evaluations (vlfw.runner.logging), and `metrics.json` with the latest value of every
`split/dataset/metric`. `load_run` reads them; `write_run_plots` draws a run's curves;
`comparison_table` and `write_comparison_plots` put several runs side by side. `vlfw_report`
(vlfw.cli.report) is the command line.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from vlfw.errors import DataError

EVAL_SPLITS = ("val", "test")
TOTAL_LOSS = "total_loss"
# training scalars that are not losses (vlfw.runner.hooks.LoggingHook.reduce)
NON_LOSS_SCALARS = frozenset({"lr", "grad_norm", "samples_per_second", "peak_memory_mb", "skipped_updates"})

Series = list[tuple[int, float]]  # (update, value), in log order


@dataclass
class RunData:
    """What a report needs from one run directory."""

    name: str
    directory: Path
    # dataset -> loss term -> series ("total_loss" is the dataset's weighted sum)
    losses: dict[str, dict[str, Series]] = field(default_factory=dict)
    total_loss: Series = field(default_factory=list)  # train/total_loss (all datasets of the update)
    lr: Series = field(default_factory=list)
    # split -> dataset -> metric -> series
    evaluations: dict[str, dict[str, dict[str, Series]]] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)  # split/dataset/metric -> the latest value
    last_update: int | None = None
    model: str | None = None
    config_datasets: list[str] = field(default_factory=list)  # the config's `datasets`, in order
    notes: list[str] = field(default_factory=list)  # what was skipped (a truncated last line ...)

    @property
    def datasets(self) -> list[str]:
        """Datasets in the config's order, then any other the log names."""
        seen: list[str] = []
        for name in self.config_datasets + list(self.losses) + [d for split in self.evaluations.values() for d in split]:
            if name not in seen:
                seen.append(name)
        return seen


def _number(value: object) -> float | None:
    """A finite float of a logged value; None for anything else (strings, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def read_train_log(path: Path) -> tuple[list[dict], list[str]]:
    """The records of a train_log.jsonl and notes on what was skipped.

    A last line that is not valid JSON is the mark of a run killed while it wrote: it is
    skipped with a note. A bad line before the last one is a DataError (the file is corrupt).
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    records, notes = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        problem = None
        try:
            record = json.loads(line)
        except ValueError:
            record, problem = None, "not valid JSON"
        if problem is None and not isinstance(record, dict):
            problem = "not a JSON object"
        if problem is None:
            try:
                update = int(record["update"])
            except (KeyError, TypeError, ValueError):
                problem = "no integer 'update'"
        if problem is not None:
            if number == len(lines):
                notes.append(f"ignored the incomplete last line {number} of {path} (a run killed while writing?)")
                continue
            raise DataError(f"{path} line {number}: {problem}; the log is corrupt")
        record["update"] = update
        records.append(record)
    return records, notes


def _read_metrics_json(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} must hold a JSON object of 'split/dataset/metric': value")
    return {str(k): v for k, v in ((k, _number(v)) for k, v in data.items()) if v is not None}


def _run_config(directory: Path) -> tuple[str | None, list[str]]:
    """The `model` and `datasets` of the run's config.yaml (plain YAML, read without executing
    anything); (None, []) when it is missing or unreadable: they only name and order things."""
    path = directory / "config.yaml"
    if not path.is_file():
        return None, []
    try:
        from omegaconf import OmegaConf

        config = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        model, datasets = config.get("model"), config.get("datasets") or []
        datasets = [datasets] if isinstance(datasets, str) else list(datasets)
        return (str(model) if model is not None else None), [str(d) for d in datasets]
    except Exception:  # noqa: BLE001 - decoration only; the report does not need them
        return None, []


def load_run(directory: str | os.PathLike, name: str | None = None) -> RunData:
    """Read a run directory (DataError when it or its train_log.jsonl is missing or empty)."""
    directory = Path(directory)
    if not directory.exists():
        raise DataError(f"run directory {directory} does not exist")
    if not directory.is_dir():
        raise DataError(f"{directory} is not a directory (give a run's save_dir)")
    log_path = directory / "train_log.jsonl"
    if not log_path.is_file():
        raise DataError(f"{directory} has no train_log.jsonl: not a vlfw run directory, or the run had "
                        "logging.jsonl=false")
    records, notes = read_train_log(log_path)
    if not records:
        raise DataError(f"{log_path} holds no log records yet (the run logs every training.log_every updates)")
    run = RunData(name=name or directory.resolve().name, directory=directory, notes=notes)
    run.model, run.config_datasets = _run_config(directory)
    latest: dict[str, float] = {}
    for record in records:
        update = record["update"]
        run.last_update = update if run.last_update is None else max(run.last_update, update)
        for key, raw in record.items():
            value = _number(raw)
            if value is None or key in ("update", "kind"):
                continue
            parts = key.split("/")
            if parts[0] == "train":
                if len(parts) == 2 and parts[1] == "lr":
                    run.lr.append((update, value))
                elif len(parts) == 2 and parts[1] == TOTAL_LOSS:
                    run.total_loss.append((update, value))
                elif len(parts) == 3 and parts[2] not in NON_LOSS_SCALARS:
                    run.losses.setdefault(parts[1], {}).setdefault(parts[2], []).append((update, value))
            elif parts[0] in EVAL_SPLITS and len(parts) >= 3:
                dataset, metric = parts[1], "/".join(parts[2:])
                run.evaluations.setdefault(parts[0], {}).setdefault(dataset, {}).setdefault(metric, []).append(
                    (update, value))
                latest[key] = value
    metrics_path = directory / "metrics.json"
    run.final = _read_metrics_json(metrics_path) if metrics_path.is_file() else {}
    # metrics.json is rewritten after every evaluation; the log fills in when it is missing
    for key, value in latest.items():
        if key.split("/", 1)[0] in EVAL_SPLITS:
            run.final.setdefault(key, value)
    return run


def unique_names(directories: Sequence[str | os.PathLike]) -> list[str]:
    """Short distinct names for run directories: the folder names, with parents added while
    two are equal (save/a/run and save/b/run -> a/run, b/run)."""
    parts = [Path(d).resolve().parts for d in directories]
    depth = 1
    while True:
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names) or depth >= max(len(p) for p in parts):
            break
        depth += 1
    if len(set(names)) != len(names):  # the same directory given twice
        names = [f"{n} ({i + 1})" for i, n in enumerate(names)]
    return names


# -- the comparison table ----------------------------------------------------------------------
def _format(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def comparison_table(runs: Sequence[RunData]) -> str:
    """Markdown: one row per dataset / split / metric (val, then test), one column per run.

    Values are each run's latest (metrics.json, else the log's last evaluation); "-" where a run
    has no such value. Datasets follow the first run that names them.
    """
    rows: dict[str, dict[str, dict[str, list[float | None]]]] = {}
    for index, run in enumerate(runs):
        for key, value in run.final.items():
            split, dataset, metric = (key.split("/", 2) + ["", ""])[:3]
            if split not in EVAL_SPLITS or not metric:
                continue
            cells = rows.setdefault(dataset, {}).setdefault(split, {}).setdefault(metric, [None] * len(runs))
            cells[index] = value
    header = "| dataset | split | metric | " + " | ".join(r.name.replace("|", "\\|") for r in runs) + " |"
    lines = [header, "|---|---|---|" + "---|" * len(runs)]
    order = [d for run in runs for d in run.datasets] + list(rows)
    for dataset in dict.fromkeys(order):
        for split in EVAL_SPLITS:
            for metric, cells in sorted(rows.get(dataset, {}).get(split, {}).items()):
                lines.append(f"| {dataset} | {split} | {metric} | " + " | ".join(_format(c) for c in cells) + " |")
    if len(lines) == 2:
        return "No evaluation metrics yet in " + ", ".join(r.name for r in runs) + ".\n"
    return "\n".join(lines) + "\n"


def runs_table(runs: Sequence[RunData]) -> str:
    """Markdown: each run's name, model, last logged update and directory."""
    lines = ["| run | model | last update | directory |", "|---|---|---|---|"]
    for run in runs:
        lines.append(f"| {run.name} | {run.model or '?'} | {run.last_update} | {run.directory} |")
    return "\n".join(lines) + "\n"


# -- plots -------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _grid(plt, count: int, width: float = 5.0, height: float = 3.4):
    columns = min(count, 3)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    flat = [a for row in axes for a in row]
    for extra in flat[count:]:
        extra.set_visible(False)
    return figure, flat[:count]


def _draw(axis, series: Series, label: str, **style) -> None:
    xs, ys = [u for u, _ in series], [v for _, v in series]
    marker = "o" if len(series) <= 12 else None  # few points (evaluations): show each
    axis.plot(xs, ys, label=label, marker=marker, markersize=4, **style)


def _finish(figure, axes, path: Path, title: str) -> Path:
    for axis in axes:
        axis.set_xlabel("update")
        axis.grid(True, alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
    except OSError as exc:
        from vlfw.errors import OutputError

        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        _pyplot().close(figure)
    return path


def _loss_terms(terms: dict[str, Series]) -> dict[str, Series]:
    """A dataset's curves: its total loss, and its terms when there are several."""
    parts = {k: v for k, v in terms.items() if k != TOTAL_LOSS}
    shown = {TOTAL_LOSS: terms[TOTAL_LOSS]} if TOTAL_LOSS in terms else {}
    if len(parts) > 1 or not shown:
        shown.update(parts)
    return shown


def write_run_plots(run: RunData, out: str | os.PathLike) -> list[Path]:
    """loss.png (one panel per dataset), metrics.png (one panel per dataset: every val metric,
    test values as single points) and lr.png of one run into `out`; what has no data is skipped."""
    plt = _pyplot()
    out = Path(out)
    written = []
    if run.losses or run.total_loss:
        panels = list(run.losses) or ["all datasets"]
        figure, axes = _grid(plt, len(panels))
        for axis, dataset in zip(axes, panels):
            terms = _loss_terms(run.losses[dataset]) if dataset in run.losses else {TOTAL_LOSS: run.total_loss}
            for term, series in terms.items():
                _draw(axis, series, term)
            axis.set_title(dataset)
            axis.set_ylabel("training loss")
        written.append(_finish(figure, axes, out / "loss.png", f"{run.name}: training loss per dataset"))
    datasets = [d for d in run.datasets if any(d in run.evaluations.get(s, {}) for s in EVAL_SPLITS)]
    if datasets:
        figure, axes = _grid(plt, len(datasets))
        for axis, dataset in zip(axes, datasets):
            metrics = list(dict.fromkeys(m for s in EVAL_SPLITS for m in run.evaluations.get(s, {}).get(dataset, {})))
            for number, metric in enumerate(metrics):
                color = f"C{number % 10}"  # one colour per metric: val curve, test points
                for split in EVAL_SPLITS:
                    series = run.evaluations.get(split, {}).get(dataset, {}).get(metric)
                    if not series:
                        continue
                    if split == "val":
                        _draw(axis, series, f"val {metric}", color=color)
                    else:
                        axis.plot([u for u, _ in series], [v for _, v in series], linestyle="none", marker="*",
                                  markersize=11, color=color, label=f"test {metric}")
            axis.set_title(dataset)
            axis.set_ylabel("metric")
        written.append(_finish(figure, axes, out / "metrics.png", f"{run.name}: evaluation metrics per dataset"))
    else:
        run.notes.append(f"{run.name}: no evaluation yet, no metrics plot")
    if run.lr:
        figure, axes = _grid(plt, 1, width=6.0)
        _draw(axes[0], run.lr, "learning rate")
        axes[0].set_ylabel("learning rate")
        axes[0].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        written.append(_finish(figure, axes, out / "lr.png", f"{run.name}: learning rate"))
    return written


def write_comparison_plots(runs: Sequence[RunData], out: str | os.PathLike) -> list[Path]:
    """comparison_loss.png (a panel per dataset: each run's total loss of it),
    comparison_metrics.png (a panel per dataset and val metric: each run's curve) and
    comparison_lr.png, overlaid, into `out`."""
    plt = _pyplot()
    out = Path(out)
    written = []
    datasets = list(dict.fromkeys(d for run in runs for d in run.datasets if d in run.losses))
    if datasets:
        figure, axes = _grid(plt, len(datasets))
        for axis, dataset in zip(axes, datasets):
            for run in runs:
                terms = run.losses.get(dataset, {})
                series = terms.get(TOTAL_LOSS) or next(iter(terms.values()), None)
                if series:
                    _draw(axis, series, run.name)
            axis.set_title(f"{dataset}: training loss")
            axis.set_ylabel("training loss")
        written.append(_finish(figure, axes, out / "comparison_loss.png", "training loss per dataset"))
    panels = list(dict.fromkeys((d, m) for run in runs for d in run.datasets
                                for m in run.evaluations.get("val", {}).get(d, {})))
    if panels:
        figure, axes = _grid(plt, len(panels))
        for axis, (dataset, metric) in zip(axes, panels):
            for run in runs:
                series = run.evaluations.get("val", {}).get(dataset, {}).get(metric)
                if series:
                    _draw(axis, series, run.name)
            axis.set_title(f"{dataset}: val {metric}")
            axis.set_ylabel(metric)
        written.append(_finish(figure, axes, out / "comparison_metrics.png", "validation metrics"))
    if any(run.lr for run in runs):
        figure, axes = _grid(plt, 1, width=6.0)
        for run in runs:
            if run.lr:
                _draw(axes[0], run.lr, run.name)
        axes[0].set_ylabel("learning rate")
        axes[0].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        written.append(_finish(figure, axes, out / "comparison_lr.png", "learning rate"))
    return written


def common_parent(directories: Iterable[str | os.PathLike]) -> Path:
    """The deepest folder containing every directory."""
    return Path(os.path.commonpath([str(Path(d).resolve()) for d in directories]))
