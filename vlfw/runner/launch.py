"""`run(config)`: the one entry point that trains and evaluates any registered components."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from vlfw.runner.build import build_run, parse_run_type
from vlfw.runner.checkpoint import atomic_write_text, check_save_dir
from vlfw.runner.distributed import setup_distributed
from vlfw.runner.logging import ensure_console_handler
from vlfw.runner.trainer import Trainer

log = logging.getLogger("vlfw.runner")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def run(config: DictConfig) -> dict[str, float]:
    """Run `config.run_type` (train, val, test or a combination); returns the final metrics."""
    ensure_console_handler()
    parse_run_type(config.run_type)  # fail before any process group or dataset is set up
    context = setup_distributed(config)
    try:
        seed = int(config.seed)
        seed_everything(seed)
        set_deterministic(bool(config.training.deterministic))
        save_dir = Path(config.save_dir)
        check_save_dir(config, context)
        run_spec = build_run(config, context)
        # what follows (dropout, augmentation drawn from global RNG) should differ per rank
        seed_everything(seed + context.rank)
        trainer = Trainer(run_spec)
        # a resume (or the checkpoint to evaluate) is checked against this run before anything is written
        if "train" in run_spec.parts:
            trainer.setup_training()
        else:
            trainer.setup_evaluation()
        if context.is_main:
            save_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(save_dir / "config.yaml", OmegaConf.to_yaml(config, resolve=True))
        return trainer.run()
    finally:
        context.cleanup()
