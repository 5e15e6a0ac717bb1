"""The shared training loop for every model and task (see docs/runner.md).

The loop is lean: `before_update -> run_update -> after_update`, everything else is a hook
(vlfw.runner.hooks); the update itself is the UpdateStep (vlfw.runner.step). The Trainer owns
the counters, the checkpoint format and the evaluations the hooks ask for.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import OmegaConf

from vlfw.distributed import all_gather_object, all_reduce_sum
from vlfw.errors import CheckpointError, ConfigError, Preempted, VlfwError
from vlfw.plugins import plugin_versions
from vlfw.runner import checkpoint as ckpt
from vlfw.runner.build import Run
from vlfw.runner.hooks import BestCheckpointHook, Hook, build_user_hooks, training_hooks
from vlfw.runner.logging import RunLogger
from vlfw.runner.preemption import PreemptionSignal
from vlfw.runner.report import results_table
from vlfw.runner.step import UpdateResult

log = logging.getLogger("vlfw.runner")
CHECKPOINT_FORMAT = 2  # 2: hooks' states, DCP (name-keyed) optimizer state


class Trainer:
    """Trains and evaluates the components of `run` (from build_run) as its config says."""

    def __init__(self, run: Run, hooks: list[Hook] | None = None) -> None:
        self.run_spec = run
        self.config = run.config
        self.context = run.context
        self.model = run.model
        self.train_model = run.train_model
        self.parts = run.parts
        self.evaluator = run.evaluator
        self.step = run.step
        self.save_dir = Path(self.config.save_dir)
        self.checkpoints = ckpt.CheckpointManager(self.save_dir, int(self.config.checkpoint.keep_last or 0))
        self.total_updates = run.total_updates
        self.update = 0
        self.last_saved_update: int | None = None  # the update of the newest update_<N>.pt of this process
        self.stop_reason: str | None = None
        self.latest_metrics: dict[str, dict[str, float]] = {}
        self.logger: RunLogger | None = None
        if hooks is None:
            user = build_user_hooks(self.config.training.get("callbacks"))
            hooks = training_hooks(self.config, self.parts, user) if "train" in self.parts else user
        names = [h.name for h in hooks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"two hooks share the name(s) {duplicates}: each hook's state is saved under its name")
        self.hooks = hooks

    # -- what hooks call ----------------------------------------------------------------------
    def hook(self, kind: type) -> Any:
        """The first hook of class `kind`, or None."""
        return next((h for h in self.hooks if isinstance(h, kind)), None)

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason

    def log(self, scalars: Mapping[str, float], kind: str = "train") -> None:
        if self.logger is not None:
            self.logger.log(self.update, scalars, kind=kind)

    def selection_value(self, metrics: Mapping[str, float]) -> float:
        """The value of `evaluation.metric` among `metrics` (validation results)."""
        wanted = self.config.evaluation.metric
        primaries = self.evaluator.primary_keys
        names = list(self.run_spec.builders)
        if wanted is None or str(wanted) == "mean":
            names = names if wanted is not None else names[:1]
            keys = [f"val/{n}/{primaries[n]}" for n in names if n in primaries]
            if not keys:
                raise ConfigError("no metric to select the best checkpoint: configure dataset_config.<name>.metrics "
                                  "or set evaluation.metric")
            return sum(metrics[k] for k in keys) / len(keys)
        if str(wanted) not in metrics:
            raise ConfigError(f"evaluation.metric={wanted!r} is not among the validation metrics: {sorted(metrics)}")
        return metrics[str(wanted)]

    def evaluate(self, split: str, write_predictions: bool = False) -> dict[str, float]:
        """Evaluate `split` (with the weights hooks choose, e.g. the EMA), log it, tell the hooks."""
        with contextlib.ExitStack() as stack:
            for hook in self.hooks:
                stack.enter_context(hook.evaluation_weights(self))
            metrics = self.evaluator.evaluate(self.model, split, write_predictions)
            self.latest_metrics[split] = metrics
            self.log(metrics, kind=split)
            if self.context.is_main:
                ckpt.atomic_write_text(self.save_dir / "metrics.json",
                                       json.dumps(self.flat_metrics(), indent=2, sort_keys=True) + "\n")
            for hook in self.hooks:
                hook.after_evaluation(self, split, metrics)
        self.train_model.train("train" in self.parts)
        return metrics

    def flat_metrics(self) -> dict[str, float]:
        flat: dict[str, float] = {}
        for split in ("train", "val", "test"):
            flat.update(self.latest_metrics.get(split, {}))
        return flat

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs (collective: every rank must call it)."""
        run = self.run_spec
        return {
            "format": CHECKPOINT_FORMAT,
            "model": ckpt.model_state_dict(self.model),
            "optimizer": ckpt.optimizer_state_dict(self.model, run.optimizer),
            "scheduler": run.scheduler.state_dict(),
            "step": self.step.state_dict(),
            "data": run.iterator.state_dict(),
            "rng": all_gather_object(ckpt.rng_state()),
            "counters": {"update": self.update, "epoch": self.update // run.updates_per_epoch,
                         "total_updates": self.total_updates},
            "hooks": {hook.name: hook.state_dict() for hook in self.hooks},
            "latest_metrics": self.latest_metrics,
            "config": OmegaConf.to_yaml(self.config, resolve=True),
            "plugins": plugin_versions(),
            "world_size": self.context.world_size,
        }

    def save_checkpoint(self, best: bool = False) -> None:
        """update_<N>.pt (and the `last` pointer), or best.pt; never non-finite weights. Rank 0
        writes; when it cannot, every rank stops with the error (no rank waits for the others)."""
        state = self.state_dict()
        error: VlfwError | None = None
        if self.context.is_main:
            try:
                self._write_checkpoint(state, best)
            except VlfwError as exc:  # a full disk, a read-only folder, non-finite weights
                error = exc
        if self.context.enabled:  # instead of a barrier: every rank learns whether rank 0 wrote it
            failed = all_reduce_sum(torch.tensor([0.0 if error is None else 1.0], device=self.context.device))
            if error is None and failed.item() > 0:
                error = CheckpointError(f"rank 0 could not write the checkpoint of update {self.update} "
                                        "(its error says why); stopping")
        if error is not None:
            raise error
        if not best:
            self.last_saved_update = self.update

    def _write_checkpoint(self, state: dict[str, Any], best: bool) -> None:
        bad = ckpt.non_finite_tensors(state["model"])
        if bad:
            raise CheckpointError(f"the weights hold NaN or Inf at update {self.update} ({', '.join(bad[:3])}"
                                  f"{' ...' if len(bad) > 3 else ''}): not saved; the last good checkpoint "
                                  "stays in place. Lower optimizer.lr or enable training.clip_grad_norm")
        if best:
            self.checkpoints.save_best(state)
        else:
            path = self.checkpoints.save(state, self.update)
            for hook in self.hooks:
                hook.after_checkpoint(self, str(path))

    def resume(self, path: Path) -> dict[str, Any]:
        """Load a checkpoint written by `state_dict`; returns this rank's RNG state (set last)."""
        run = self.run_spec
        state = ckpt.load_checkpoint(path)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"cannot resume from {path}: it was written by an older vlfw (checkpoint format "
                                  f"{state.get('format', 1)}, this one reads {CHECKPOINT_FORMAT}); start from its "
                                  "weights with checkpoint.pretrained instead")
        ckpt.check_compatible(state, self.config, path)
        try:
            ckpt.load_model_state_dict(self.model, state["model"])
            ckpt.load_optimizer_state_dict(self.model, run.optimizer, state["optimizer"])
            run.scheduler.load_state_dict(state["scheduler"])
            self.step.load_state_dict(state["step"])
            run.iterator.load_state_dict(state["data"])
            hook_states = state["hooks"]
            for hook in self.hooks:
                if hook.name in hook_states:
                    hook.load_state_dict(hook_states[hook.name])
            counters = state["counters"]
            rng_states = state["rng"]
        except (KeyError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"cannot resume from {path}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        if len(rng_states) != self.context.world_size:
            raise CheckpointError(f"{path} was written by {len(rng_states)} rank(s); resume it with the same number")
        self.update = int(counters["update"])
        self.latest_metrics = {k: dict(v) for k, v in state["latest_metrics"].items()}
        log.info("resumed from %s at update %d", path, self.update)
        return rng_states[self.context.rank]

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> dict[str, float]:
        """Train / validate / test as `run_type` says; returns the latest metrics of each split."""
        try:
            if "train" in self.parts:
                self.train()
            else:
                if self.logger is None:
                    self.setup_evaluation()
                if "val" in self.parts:
                    self.evaluate("val")
            if "test" in self.parts:
                best = self.hook(BestCheckpointHook)
                if best is not None and best.best_update is not None and self.checkpoints.best_path.is_file():
                    ckpt.load_model_state_dict(self.model, ckpt.load_checkpoint(self.checkpoints.best_path)["model"])
                    log.info("testing the best checkpoint (update %s)", best.best_update)
                self.evaluate("test", write_predictions=bool(self.config.evaluation.write_predictions))
        finally:
            if self.logger is not None:
                self.logger.close()
        self._report()
        return self.flat_metrics()

    def _report(self) -> None:
        """The per-task result table: on the console and in `<save_dir>/results.md`."""
        metrics = self.flat_metrics()
        blind = self._blind_levels(metrics) if self.config.evaluation.get("blind_levels") and self.context.is_main else None
        table = results_table(metrics, self.evaluator.primary_keys, blind)
        if table and self.context.is_main:
            ckpt.atomic_write_text(self.save_dir / "results.md", table)
            log.info("results (val: latest evaluation; test: %s)\n%s",
                     "the best checkpoint" if "train" in self.parts else "these weights", table)

    def _blind_levels(self, metrics: dict[str, float]) -> dict[tuple[str, str], float | None]:
        """(dataset, split) -> its primary metric without the image (vlfw.metrics.blind)."""
        from vlfw.metrics.blind import blind_level

        evaluated = {tuple(k.split("/", 2)[:2]) for k in metrics if k.split("/", 1)[0] in ("val", "test")}
        levels = {}
        for split, name in sorted(evaluated):
            builder = self.evaluator.builders[name]
            levels[(name, split)] = blind_level(builder, self.evaluator.task_infos[name].task, split)
        return levels

    def setup_evaluation(self) -> None:
        """A val/test-only run: load the weights it evaluates (checked: a checkpoint of this run's
        save_dir must be of this model and datasets) before anything is written."""
        checkpoint = self.config.checkpoint
        if checkpoint.resume_file:
            ckpt.load_model_weights(self.model, checkpoint.resume_file)
            log.info("evaluating the weights of %s", checkpoint.resume_file)
        elif checkpoint.resume:
            path = self.checkpoints.best_path if self.checkpoints.best_path.is_file() else self._last_checkpoint()
            ckpt.load_model_weights(self.model, path, self.config)
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

    def resume_path(self) -> Path | None:
        """The checkpoint this training run continues from, if any."""
        checkpoint = self.config.checkpoint
        if checkpoint.resume_file:
            return Path(checkpoint.resume_file)
        if checkpoint.resume:
            return self._last_checkpoint()
        return None

    # -- training --------------------------------------------------------------------------------
    def setup_training(self) -> None:
        resume_path = self.resume_path()
        rng_state = self.resume(resume_path) if resume_path is not None else None
        self.logger = RunLogger(self.save_dir, self.context.is_main, bool(self.config.logging.jsonl),
                                bool(self.config.logging.tensorboard),
                                resume_update=self.update if resume_path is not None else None)
        if rng_state is not None:  # last, so that nothing above draws from the restored RNG
            ckpt.set_rng_state(rng_state)

    def run_update(self) -> UpdateResult:
        """One optimizer update (public: tools/bench times it)."""
        return self.step(self.run_spec.iterator, self.update)

    def train(self) -> None:
        if self.logger is None:
            self.setup_training()
        for hook in self.hooks:
            hook.before_train(self)
        self.train_model.train()
        with PreemptionSignal() as preemption:
            try:
                while self.update < self.total_updates and not self.stop_reason:
                    for hook in self.hooks:
                        hook.before_update(self)
                    result = self.run_update()
                    self.update += 1
                    for hook in self.hooks:
                        hook.after_update(self, result)
                    if preemption.requested(self.context.device):  # every rank stops after this update
                        self._stop_for_preemption()
            finally:
                self.run_spec.iterator.close()
        if self.stop_reason:
            log.info("%s", self.stop_reason)
        for hook in self.hooks:
            hook.after_train(self)

    def _stop_for_preemption(self) -> None:
        """At an update boundary after SIGTERM: the checkpoint of this update (unless the
        checkpoint hook just wrote it), then `Preempted` (the command line exits with 143)."""
        log.warning("SIGTERM received: writing the checkpoint of update %d and stopping", self.update)
        if self.last_saved_update != self.update:
            self.save_checkpoint()
        raise Preempted(f"stopped on SIGTERM after update {self.update} of {self.total_updates}; "
                        f"{self.checkpoints.update_path(self.update)} is written: run the same command with "
                        "checkpoint.resume=auto (or true) to continue")

    def export_weights(self, path: Path) -> None:
        """Safetensors weights: this run's best checkpoint when it wrote one, else the model's."""
        best = self.hook(BestCheckpointHook)
        if best is not None and best.best_update is not None and self.checkpoints.best_path.is_file():
            state = ckpt.load_checkpoint(self.checkpoints.best_path)["model"]
        else:
            with contextlib.ExitStack() as stack:
                for hook in self.hooks:
                    stack.enter_context(hook.evaluation_weights(self))
                state = ckpt.model_state_dict(self.model)
                state = {k: v.clone() for k, v in state.items()}
        if self.context.is_main:
            bad = ckpt.non_finite_tensors(state)
            if bad:
                raise CheckpointError(f"the weights hold NaN or Inf ({', '.join(bad[:3])}): {path} not written")
            ckpt.export_safetensors(state, path)
