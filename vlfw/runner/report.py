"""The per-task result table printed at the end of a run and written to `<save_dir>/results.md`."""

from __future__ import annotations

from typing import Mapping

SPLITS = ("val", "test")


def results_table(metrics: Mapping[str, float], primary: Mapping[str, str] | None = None,
                  blind: Mapping[tuple[str, str], float | None] | None = None) -> str:
    """A Markdown table with one row per (dataset, split) of the flat `split/dataset/metric` keys.

    The dataset's primary metric (the one checkpoint selection reads) gets its own column; the
    other metrics follow as `name value` pairs. Training scalars (`train/...`) are left out.
    `blind`: (dataset, split) -> the primary metric's blind level (vlfw.metrics.blind), printed
    in a column of its own when given. Empty string when there are no evaluation metrics.
    """
    primary = dict(primary or {})
    rows: dict[tuple[str, str], dict[str, float]] = {}
    order: list[str] = []
    for key, value in metrics.items():
        parts = key.split("/", 2)
        if len(parts) != 3 or parts[0] not in SPLITS:
            continue
        split, dataset, name = parts
        if dataset not in order:
            order.append(dataset)
        rows.setdefault((dataset, split), {})[name] = float(value)
    if not rows:
        return ""
    if blind is not None:
        lines = ["| dataset | split | primary metric | value | blind level | other metrics |", "|---|---|---|---|---|---|"]
    else:
        lines = ["| dataset | split | primary metric | value | other metrics |", "|---|---|---|---|---|"]
    for dataset in order:
        for split in SPLITS:
            values = rows.get((dataset, split))
            if values is None:
                continue
            name = primary.get(dataset) if primary.get(dataset) in values else next(iter(sorted(values)))
            others = ", ".join(f"{k} {v:.2f}" for k, v in sorted(values.items()) if k != name)
            if blind is not None:
                level = blind.get((dataset, split))
                shown = "-" if level is None else f"{level:.2f}"
                lines.append(f"| {dataset} | {split} | {name} | {values[name]:.2f} | {shown} | {others} |")
            else:
                lines.append(f"| {dataset} | {split} | {name} | {values[name]:.2f} | {others} |")
    return "\n".join(lines) + "\n"
