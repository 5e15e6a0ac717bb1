"""`vlfw_report RUN_DIR [RUN_DIR ...] [--out DIR]`: plots of runs and a table comparing them.

One run: loss.png, metrics.png and lr.png next to its results.md (or in --out). Several runs:
the same per run (in each run directory, or in --out/<run name>/), plus comparison.md (printed
too) and comparison_loss.png / comparison_metrics.png / comparison_lr.png with the runs' curves
overlaid, in --out or else the folder that holds all the runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from vlfw.cli.common import guarded_main
from vlfw.errors import ConfigError, OutputError

USAGE = "vlfw_report RUN_DIR [RUN_DIR ...] [--out DIR] [--debug]"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line through guarded_main instead of argparse's exit
        raise ConfigError(f"{message} (usage: {USAGE})")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vlfw_report", description="Plot vlfw runs' training logs and compare their results.")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="a run's save_dir (holds train_log.jsonl)")
    parser.add_argument("--out", default=None, help="where to write the plots and comparison.md")
    return parser


def _write_text(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def _report(args: list[str]) -> int:
    from vlfw import reporting

    if any(a in ("-h", "--help") for a in args):
        _parser().print_help()
        return 0
    options = _parser().parse_args(args)
    names = reporting.unique_names(options.runs)
    runs = [reporting.load_run(directory, name) for directory, name in zip(options.runs, names)]  # all read first
    out = Path(options.out) if options.out else None
    written: list[Path] = []
    for run in runs:
        if out is None:
            target = run.directory
        else:
            target = out if len(runs) == 1 else out / run.name.replace("/", "_")
        written += reporting.write_run_plots(run, target)
    table = reporting.comparison_table(runs)
    if len(runs) > 1:
        target = out or reporting.common_parent(r.directory for r in runs)
        document = ("# Run comparison\n\n" + reporting.runs_table(runs) + "\nLatest evaluation of each run "
                    "(val: the last validation; test: as the run reported it).\n\n" + table)
        _write_text(target / "comparison.md", document)
        written.append(target / "comparison.md")
        written += reporting.write_comparison_plots(runs, target)
    print(table, end="")
    for run in runs:
        for note in run.notes:
            print(f"note: {note}", file=sys.stderr)
    print("wrote:")
    for path in written:
        print(f"  {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return guarded_main("vlfw_report", _report, argv)


if __name__ == "__main__":
    sys.exit(main())
