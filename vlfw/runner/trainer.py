"""The shared training loop for every model and task (see docs/runner.md)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from vlfw.data.multitask import DatasetStream, MultitaskIterator, build_iteration_strategy
from vlfw.errors import CheckpointError, ConfigError, VlfwError
from vlfw.plugins import plugin_versions
from vlfw.runner import checkpoint as ckpt
from vlfw.runner.build import build_losses, build_metrics, compute_loss, parse_run_type
from vlfw.runner.callbacks import build_callbacks
from vlfw.runner.distributed import DistributedContext, all_gather_object, all_reduce_sum, wrap_model
from vlfw.runner.evaluation import Evaluator
from vlfw.runner.logging import RunLogger, peak_memory_mb
from vlfw.runner.optim import build_optimizer
from vlfw.runner.report import results_table
from vlfw.runner.schedulers import build_scheduler

log = logging.getLogger("vlfw.runner")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Trainer:
    """Trains and evaluates `model` on the datasets of `builders` as `config` says."""

    def __init__(self, config: DictConfig, context: DistributedContext, builders: dict, model: torch.nn.Module) -> None:
        self.config = config
        self.context = context
        self.builders = builders
        self.model = model
        self.train_model: torch.nn.Module = model
        self.parts = parse_run_type(config.run_type)
        self.training = config.training
        self.save_dir = Path(config.save_dir)
        self.task_infos = {name: b.task_info() for name, b in builders.items()}
        precision = str(self.training.precision)
        if precision not in PRECISIONS:
            raise ConfigError(f"training.precision must be fp32, bf16 or fp16, got {precision!r}")
        self.amp_dtype = PRECISIONS[precision]
        if str(config.evaluation.mode) not in ("max", "min"):
            raise ConfigError(f"evaluation.mode must be max or min, got {config.evaluation.mode!r}")
        if str(self.training.nan_policy) not in ("stop", "skip"):
            raise ConfigError(f"training.nan_policy must be stop or skip, got {self.training.nan_policy!r}")
        self.losses = {name: build_losses(config, name) for name in builders}
        self.metrics = {name: build_metrics(config, name, self.task_infos[name]) for name in builders}
        evaluation = config.evaluation
        self.evaluator = Evaluator(
            builders, self.metrics, context,
            batch_size=int(evaluation.batch_size or self.training.batch_size),
            num_workers=int(self.training.num_workers), pin_memory=self._pin_memory(),
            progress_bar=bool(self.training.progress_bar), autocast=self.autocast,
            predictions_dir=self.save_dir / "predictions")
        self.callbacks = build_callbacks(self.training.get("callbacks"))
        self.checkpoints = ckpt.CheckpointManager(self.save_dir, int(config.checkpoint.keep_last or 0))
        # counters and the state that a checkpoint restores
        self.update = 0
        self.total_updates = 0
        self.best_value: float | None = None
        self.best_update: int | None = None
        self.bad_evaluations = 0
        self.skipped_updates = 0
        self.latest_metrics: dict[str, dict[str, float]] = {}
        self.optimizer = self.scheduler = self.scaler = self.iterator = None
        self.used_lr = 0.0
        self.logger: RunLogger | None = None

    # -- helpers ---------------------------------------------------------------------------
    def _pin_memory(self) -> bool:
        return bool(self.training.pin_memory) and self.context.device.type == "cuda"

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.context.device.type, dtype=self.amp_dtype)

    @property
    def fsdp(self) -> bool:
        return self.context.enabled and self.context.strategy == "fsdp"

    def model_state(self) -> dict[str, torch.Tensor]:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            set_model_state_dict(self.model, state, options=StateDictOptions(full_state_dict=True))
        else:
            self.model.load_state_dict(state)

    def _optimizer_state(self) -> dict[str, Any]:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(self.model, self.optimizer,
                                            options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return self.optimizer.state_dict()

    def _load_optimizer_state(self, state: dict[str, Any]) -> None:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.model, self.optimizer, state, options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(state)

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> dict[str, float]:
        """Train / validate / test as `run_type` says; returns the latest metrics of each split."""
        try:
            if "train" in self.parts:
                self.train()
            else:
                self._load_for_evaluation()
                if "val" in self.parts:
                    self._evaluate("val")
            if "test" in self.parts:
                if "train" in self.parts and self.checkpoints.best_path.is_file():
                    self.load_model_state(ckpt.load_checkpoint(self.checkpoints.best_path)["model"])
                    log.info("testing the best checkpoint (update %s)", self.best_update)
                self._evaluate("test", write_predictions=bool(self.config.evaluation.write_predictions))
        finally:
            if self.logger is not None:
                self.logger.close()
        self._report()
        return self._flat_metrics()

    def _report(self) -> None:
        """The per-task result table: on the console and in `<save_dir>/results.md`."""
        table = results_table(self._flat_metrics(), self.evaluator.primary_keys)
        if table and self.context.is_main:
            ckpt.atomic_write_text(self.save_dir / "results.md", table)
            log.info("results (val: latest evaluation; test: %s)\n%s",
                     "the best checkpoint" if "train" in self.parts else "these weights", table)

    def _load_for_evaluation(self) -> None:
        checkpoint = self.config.checkpoint
        if checkpoint.resume_file or checkpoint.resume:
            path = checkpoint.resume_file
            if not path:
                path = self.checkpoints.best_path if self.checkpoints.best_path.is_file() else self._last_checkpoint()
            self.load_model_state(ckpt.load_checkpoint(path)["model"])
            log.info("evaluating the weights of %s", path)
        elif checkpoint.pretrained:
            ckpt.load_pretrained(self.model, checkpoint.pretrained, checkpoint.pretrained_key_map)
        self.logger = RunLogger(self.save_dir, self.context.is_main, bool(self.config.logging.jsonl), False)

    def _last_checkpoint(self) -> Path:
        path = self.checkpoints.last_path()
        if path is None:
            raise CheckpointError(f"checkpoint.resume=true but {self.checkpoints.directory} holds no checkpoint "
                                  "(no 'last' pointer); run without checkpoint.resume or set checkpoint.resume_file")
        return path

    # -- training --------------------------------------------------------------------------
    def _setup_training(self) -> None:
        training, world = self.training, self.context.world_size
        accumulation = int(training.gradient_accumulation_steps)
        if accumulation < 1:
            raise ConfigError("training.gradient_accumulation_steps must be >= 1")
        self.accumulation = accumulation
        batch_sizes = dict(self.config.multitask.get("batch_sizes") or {})
        streams = {}
        for name, builder in self.builders.items():
            global_batch = int(batch_sizes.get(name, training.batch_size))
            if global_batch % (world * accumulation):
                raise ConfigError(
                    f"the batch size of {name!r} ({global_batch}) must be divisible by ranks x accumulation "
                    f"steps ({world} x {accumulation})")
            streams[name] = DatasetStream(
                name, builder.build("train"), builder.collate, global_batch // (world * accumulation),
                world, self.context.rank, int(self.config.seed), int(training.num_workers), self._pin_memory())
        strategy = build_iteration_strategy(self.config.multitask, {n: len(s.dataset) for n, s in streams.items()},
                                            int(self.config.seed))
        self.iterator = MultitaskIterator(streams, strategy, str(self.config.multitask.mode))
        self.loss_weights = {n: float((self.config.multitask.get("loss_weights") or {}).get(n, 1.0)) for n in streams}
        self.updates_per_epoch = self.iterator.updates_per_epoch(accumulation)
        if training.max_epochs:
            self.total_updates = int(training.max_epochs) * self.updates_per_epoch
        elif training.max_updates:
            self.total_updates = int(training.max_updates)
        else:
            raise ConfigError("set training.max_updates or training.max_epochs")

        resume_path = None
        if self.config.checkpoint.resume_file:
            resume_path = Path(self.config.checkpoint.resume_file)
        elif self.config.checkpoint.resume:
            resume_path = self._last_checkpoint()
        if resume_path is None and self.config.checkpoint.pretrained:
            ckpt.load_pretrained(self.model, self.config.checkpoint.pretrained, self.config.checkpoint.pretrained_key_map)

        self.train_model = wrap_model(self.model, self.context, self.config)
        if training.compile:
            self.train_model = torch.compile(self.train_model)
        self.optimizer = build_optimizer(self.model, self.config.optimizer)
        self.scheduler = build_scheduler(self.optimizer, self.config.scheduler, self.total_updates)
        self.scaler = torch.amp.GradScaler(self.context.device.type, enabled=self.amp_dtype is torch.float16)
        resumed_state = self._resume(resume_path) if resume_path is not None else None
        self.logger = RunLogger(self.save_dir, self.context.is_main, bool(self.config.logging.jsonl),
                                bool(self.config.logging.tensorboard),
                                resume_update=self.update if resume_path is not None else None)
        if resumed_state is not None:  # last, so that nothing above draws from the restored RNG
            ckpt.set_rng_state(resumed_state)

    def _resume(self, path: Path) -> dict[str, Any]:
        state = ckpt.load_checkpoint(path)
        try:
            self.load_model_state(state["model"])
            self._load_optimizer_state(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.iterator.load_state_dict(state["data"])
            counters = state["counters"]
            rng_states = state["rng"]
        except (KeyError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"cannot resume from {path}: {type(exc).__name__}: {exc}") from None
        if len(rng_states) != self.context.world_size:
            raise CheckpointError(f"{path} was written by {len(rng_states)} rank(s); resume it with the same number")
        self.update = int(counters["update"])
        self.skipped_updates = int(counters["skipped_updates"])
        best = state["best"]
        self.best_value, self.best_update = best["value"], best["update"]
        self.bad_evaluations = int(state["early_stopping"]["bad_evaluations"])
        self.latest_metrics = {k: dict(v) for k, v in state["latest_metrics"].items()}
        log.info("resumed from %s at update %d", path, self.update)
        return rng_states[self.context.rank]

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs (collective: every rank must call it)."""
        rng_states = all_gather_object(ckpt.rng_state())
        return {
            "model": self.model_state(),
            "optimizer": self._optimizer_state(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "data": self.iterator.state_dict(),
            "rng": rng_states,
            "counters": {"update": self.update, "epoch": self.update // self.updates_per_epoch,
                         "skipped_updates": self.skipped_updates, "total_updates": self.total_updates},
            "best": {"value": self.best_value, "update": self.best_update},
            "early_stopping": {"bad_evaluations": self.bad_evaluations},
            "latest_metrics": self.latest_metrics,
            "config": OmegaConf.to_yaml(self.config, resolve=True),
            "plugins": plugin_versions(),
            "world_size": self.context.world_size,
        }

    def _save(self, best: bool = False) -> None:
        state = self.state_dict()
        if self.context.is_main:
            if best:
                self.checkpoints.save_best(state)
            else:
                path = self.checkpoints.save(state, self.update)
                for callback in self.callbacks:
                    callback.on_checkpoint_saved(self, str(path))
        self.context.barrier()

    def train(self) -> None:
        self._setup_training()
        training = self.training
        for callback in self.callbacks:
            callback.on_train_start(self)
        log_every = max(1, int(training.log_every))
        eval_every = int(training.eval_every or 0)
        checkpoint_every = int(training.checkpoint_every or 0)
        patience = training.early_stopping.patience
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}  # updates that produced each key (one_per_update: its dataset's draws)
        samples, started = 0, time.perf_counter()
        bar = tqdm(total=self.total_updates, initial=self.update, desc="train", dynamic_ncols=True,
                   disable=not (bool(training.progress_bar) and self.context.is_main))
        self.train_model.train()
        while self.update < self.total_updates:
            parts, batch_samples = self._train_update()
            self.update += 1
            samples += batch_samples
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + 1
            bar.update(1)
            stop = False
            if self.update % log_every == 0 or self.update == self.total_updates:
                scalars = self._reduce_logs(sums, counts, samples, time.perf_counter() - started)
                self.logger.log(self.update, scalars)
                bar.set_postfix(loss=f"{scalars.get('train/total_loss', float('nan')):.4f}")
                sums, counts, samples, started = {}, {}, 0, time.perf_counter()
            for callback in self.callbacks:
                callback.on_update_end(self, self.update, {k: float(v) for k, v in parts.items()})
            if "val" in self.parts and ((eval_every and self.update % eval_every == 0)
                                        or self.update == self.total_updates):
                stop = self._validate(patience)
            if (checkpoint_every and self.update % checkpoint_every == 0) or self.update == self.total_updates or stop:
                self._save()
            if stop:
                log.info("early stopping at update %d: no improvement in %d evaluations", self.update, patience)
                break
        bar.close()
        self.iterator.close()
        if self.update > 0 and not self.checkpoints.last_path():
            self._save()
        for callback in self.callbacks:
            callback.on_train_end(self)
        if self.config.checkpoint.export_safetensors:
            self._export_best()

    def _train_update(self) -> tuple[dict[str, torch.Tensor], int]:
        """One optimizer update; returns the (unreduced) loss parts and the samples used on this rank."""
        names = self.iterator.datasets_for_update(self.update)
        steps = [name for _ in range(self.accumulation) for name in names]
        one_dataset = len(names) == 1
        self.optimizer.zero_grad(set_to_none=True)
        parts: dict[str, torch.Tensor] = {}
        total_loss = torch.zeros((), device=self.context.device)
        used = 0
        for index, name in enumerate(steps):
            batch = self.iterator.streams[name].next().to(self.context.device, non_blocking=self._pin_memory())
            used += batch.batch_size
            final = index == len(steps) - 1
            with self._gradient_sync(final or not one_dataset):
                with self.autocast():
                    outputs = self.train_model(batch)
                    loss, loss_parts = compute_loss(self.losses[name], batch, outputs)
                loss = loss.float() * self.loss_weights[name]
                if not self._all_finite(loss):
                    if str(self.training.nan_policy) != "skip":
                        raise VlfwError(
                            f"the loss is {loss.item()} at update {self.update + 1} on dataset {name!r} "
                            "(training.nan_policy=stop); lower optimizer.lr, enable training.clip_grad_norm, "
                            "or set training.nan_policy=skip")
                    self.skipped_updates += 1
                    log.warning("non-finite loss at update %d on dataset %r: update skipped (%d so far)",
                                self.update + 1, name, self.skipped_updates)
                    self.optimizer.zero_grad(set_to_none=True)
                    self.scheduler.step()
                    return {"skipped_updates": torch.tensor(float(self.skipped_updates))}, used
                self.scaler.scale(loss / self.accumulation).backward()
            for key, value in loss_parts.items():
                full = f"train/{name}/{key}"
                parts[full] = parts.get(full, 0.0) + value.float() / self.accumulation
            full = f"train/{name}/total_loss"
            parts[full] = parts.get(full, 0.0) + loss.detach() / self.accumulation
            total_loss = total_loss + loss.detach() / self.accumulation
        clip = self.training.clip_grad_norm
        if clip:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(clip))
            if hasattr(norm, "full_tensor"):  # a DTensor under FSDP
                norm = norm.full_tensor()
            parts["train/grad_norm"] = norm.detach().float()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.used_lr = self._base_lr()
        self.scheduler.step()
        parts["train/total_loss"] = total_loss
        parts["skipped_updates"] = torch.tensor(float(self.skipped_updates))
        return parts, used

    def _base_lr(self) -> float:
        group = self.optimizer.param_groups[0]
        return float(group["lr"] / group.get("lr_multiplier", 1.0))

    def _gradient_sync(self, sync: bool):
        """DDP's no_sync on the micro-steps before the last one of an update (FSDP: its equivalent)."""
        if sync or not self.context.enabled:
            if self.fsdp:
                self.model.set_requires_gradient_sync(True)
            return contextlib.nullcontext()
        if self.fsdp:
            self.model.set_requires_gradient_sync(False)
            return contextlib.nullcontext()
        module = self.train_model._orig_mod if hasattr(self.train_model, "_orig_mod") else self.train_model
        return module.no_sync()

    def _all_finite(self, loss: torch.Tensor) -> bool:
        bad = torch.tensor([0.0 if bool(torch.isfinite(loss.detach())) else 1.0], device=self.context.device)
        return all_reduce_sum(bad).item() == 0.0

    def _reduce_logs(self, sums: dict[str, Any], counts: dict[str, int], samples: int,
                     elapsed: float) -> dict[str, float]:
        """Each key's mean over the updates (and ranks) that produced it since the last log line: a
        dataset's losses over the updates that drew it, not over every update of the window; a
        skipped update adds to no mean. Every rank holds the same keys (the datasets of an update
        are the same on every rank)."""
        keys = sorted(k for k in sums if k != "skipped_updates")
        device = self.context.device
        values = torch.stack([torch.as_tensor(sums[k], dtype=torch.float32, device=device).reshape(())
                              for k in keys]) if keys else torch.zeros(0, device=device)
        totals = torch.tensor([float(counts[k]) for k in keys], dtype=torch.float32, device=device)
        reduced = all_reduce_sum(torch.cat([values, totals]))
        means = reduced[:len(keys)] / reduced[len(keys):].clamp(min=1.0)
        scalars = {k: float(v) for k, v in zip(keys, means.tolist())}
        scalars["train/lr"] = self.used_lr  # the peak-relative lr of the last update (before multipliers)
        scalars["train/samples_per_second"] = samples * self.context.world_size / max(elapsed, 1e-9)
        scalars["train/peak_memory_mb"] = peak_memory_mb(self.context.device)
        scalars["train/skipped_updates"] = float(self.skipped_updates)
        return scalars

    # -- evaluation ------------------------------------------------------------------------
    def _evaluate(self, split: str, write_predictions: bool = False) -> dict[str, float]:
        model = self.model  # the plain module (DDP's forward is for training; FSDP shards in place)
        metrics = self.evaluator.evaluate(model, split, write_predictions)
        self.latest_metrics[split] = metrics
        if self.logger is not None:
            self.logger.log(self.update, metrics, kind=split)
        if self.context.is_main:
            ckpt.atomic_write_text(self.save_dir / "metrics.json", json.dumps(self._flat_metrics(), indent=2, sort_keys=True) + "\n")
        for callback in self.callbacks:
            callback.on_evaluation_end(self, split, metrics)
        return metrics

    def _flat_metrics(self) -> dict[str, float]:
        flat: dict[str, float] = {}
        for split in ("train", "val", "test"):
            flat.update(self.latest_metrics.get(split, {}))
        return flat

    def selection_value(self, metrics: dict[str, float]) -> float:
        """The value of `evaluation.metric` among `metrics` (validation results)."""
        wanted = self.config.evaluation.metric
        primaries = self.evaluator.primary_keys
        if wanted is None or str(wanted) == "mean":
            names = list(self.builders) if wanted is not None else list(self.builders)[:1]
            keys = [f"val/{n}/{primaries[n]}" for n in names if n in primaries]
            if not keys:
                raise ConfigError("no metric to select the best checkpoint: configure dataset_config.<name>.metrics "
                                  "or set evaluation.metric")
            return sum(metrics[k] for k in keys) / len(keys)
        if str(wanted) not in metrics:
            raise ConfigError(f"evaluation.metric={wanted!r} is not among the validation metrics: {sorted(metrics)}")
        return metrics[str(wanted)]

    def _validate(self, patience: Any) -> bool:
        """Validate, keep the best checkpoint, and say whether early stopping triggers."""
        metrics = self._evaluate("val")
        self.train_model.train()
        value = self.selection_value(metrics)
        if math.isnan(value):
            improved = False
        elif self.best_value is None:
            improved = True
        elif str(self.config.evaluation.mode) == "min":
            improved = value < self.best_value
        else:
            improved = value > self.best_value
        if improved:
            self.best_value, self.best_update, self.bad_evaluations = float(value), self.update, 0
            self._save(best=True)
        else:
            self.bad_evaluations += 1
        return bool(patience) and self.bad_evaluations >= int(patience)

    def _export_best(self) -> None:
        if self.checkpoints.best_path.is_file():
            state = ckpt.load_checkpoint(self.checkpoints.best_path)["model"]
        else:
            state = self.model_state()
        if self.context.is_main:
            ckpt.export_safetensors(state, self.save_dir / "best_model.safetensors")
