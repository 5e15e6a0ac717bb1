"""`vlfw_run config=projects/... key=value ...`: train and/or evaluate one config."""

from __future__ import annotations

import json
import sys
from typing import Sequence

from vlfw.cli.common import guarded_main, setup_logging

USAGE = """usage: vlfw_run config=<project.yaml> [key=value ...] [--debug]

  vlfw_run config=projects/quickstart.yaml
  vlfw_run config=projects/baselines/shapes_vqa2.yaml model=text_only training.max_updates=200
  vlfw_run model=late_fusion datasets=vqa2,nlvr2 run_type=train_val_test \\
      dataset_config.vqa2.data_dir=/data/vqa2
  torchrun --nproc_per_node=2 -m vlfw.cli.run config=...   (distributed)

Every key of vlfw/config/defaults.yaml and of the selected components' default configs
can be set; `vlfw_list` shows the components."""


def _run(args: list[str]) -> int:
    if any(a in ("-h", "--help", "help") for a in args):
        print(USAGE)
        return 0
    setup_logging()
    from vlfw.config import load_config

    config = load_config(args)
    from vlfw.runner import run

    metrics = run(config)
    if metrics:
        print(json.dumps(metrics, indent=1, sort_keys=True))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return guarded_main("vlfw_run", _run, argv)


if __name__ == "__main__":
    sys.exit(main())
