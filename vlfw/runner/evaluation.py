"""Evaluation: sharded loaders, the model's forward (or `generate` for generative tasks), metric
updates, exact gathering, evaluation steps after the pass (retrieval re-rank), prediction files."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from vlfw.data.batch import Batch
from vlfw.data.samplers import ShardedEvalSampler
from vlfw.data.workers import loader_worker_init, one_line_worker_errors
from vlfw.datasets.base import DatasetBuilder
from vlfw.distributed import all_gather_object
from vlfw.metrics.base import Metric
from vlfw.registry import TASKS
from vlfw.runner.distributed import DistributedContext, unwrap
from vlfw.runner.rerank import rerank_retrieval

log = logging.getLogger("vlfw.runner")


def _slice_outputs(outputs: dict[str, Any], rows: int, batch_size: int) -> dict[str, Any]:
    return {k: (v[:rows] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == batch_size else v)
            for k, v in outputs.items()}


class Evaluator:
    """Evaluates a model on one split of every dataset; keys are `split/dataset/metric`."""

    def __init__(self, builders: dict[str, DatasetBuilder], metrics: dict[str, list[Metric]],
                 context: DistributedContext, batch_size: int, num_workers: int = 0,
                 pin_memory: bool = False, progress_bar: bool = True,
                 autocast: Callable[[], Any] = contextlib.nullcontext,
                 predictions_dir: str | Path | None = None,
                 generation: dict[str, dict[str, Any]] | None = None,
                 task_infos: dict[str, Any] | None = None) -> None:
        self.builders = builders
        self.metrics = metrics
        self.context = context
        self.per_rank_batch = max(1, -(-int(batch_size) // context.world_size))
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.progress_bar = progress_bar
        self.autocast = autocast
        self.predictions_dir = Path(predictions_dir) if predictions_dir else None
        self.generation = dict(generation or {})  # dataset -> generate() options (generative tasks)
        self.task_infos = dict(task_infos or {})  # dataset -> TaskInfo (from the builders when not given)
        self._datasets: dict[tuple[str, str], Any] = {}
        self.primary_keys: dict[str, str] = {}  # dataset -> its primary metric name

    def dataset(self, name: str, split: str):
        key = (name, split)
        if key not in self._datasets:
            self._datasets[key] = self.builders[name].build(split)
        return self._datasets[key]

    @torch.inference_mode()
    def evaluate(self, model: torch.nn.Module, split: str, write_predictions: bool = False) -> dict[str, float]:
        was_training = model.training
        model.eval()
        results: dict[str, float] = {}
        try:
            for name, builder in self.builders.items():
                results.update(self._evaluate_dataset(model, name, builder, split, write_predictions))
        finally:
            model.train(was_training)
        return results

    def _evaluate_dataset(self, model, name: str, builder: DatasetBuilder, split: str,
                          write_predictions: bool) -> dict[str, float]:
        dataset = self.dataset(name, split)
        sampler = ShardedEvalSampler(len(dataset), self.context.world_size, self.context.rank)
        generator = torch.Generator()
        generator.manual_seed(0)
        loader = DataLoader(dataset, batch_size=self.per_rank_batch, sampler=sampler, shuffle=False,
                            collate_fn=builder.collate, num_workers=self.num_workers,
                            pin_memory=self.pin_memory, generator=generator, worker_init_fn=loader_worker_init)
        metrics = self.metrics.get(name, [])
        plain_model = unwrap(model)  # what evaluation steps call outside forward (re-rank, generate)
        if name not in self.task_infos:
            self.task_infos[name] = builder.task_info()
        task = self.task_infos[name].task
        generative = TASKS.get(task).generative
        for metric in metrics:
            metric.reset()
        rows: list[tuple[int | None, dict]] | None = [] if write_predictions else None
        seen = 0
        bar = tqdm(loader, desc=f"{split}/{name}", leave=False, dynamic_ncols=True,
                   disable=not (self.progress_bar and self.context.is_main))
        with one_line_worker_errors():  # a bad record met by a loader worker
            for batch in bar:
                batch = batch.to(self.context.device, non_blocking=self.pin_memory)
                size = batch.batch_size
                real = max(0, min(size, sampler.num_real - seen))  # rows past num_real are padding
                indices = sampler.indices[seen:seen + real]
                seen += size
                with self.autocast():
                    if generative:
                        outputs = {"generated_ids": plain_model.generate(batch, **self.generation.get(name, {}))}
                    else:
                        outputs = model(batch)
                for metric in metrics:
                    metric.update(batch, outputs)
                if rows is not None and real > 0:
                    rows = self._collect_predictions(builder, batch, outputs, real, size, indices, rows)
        bar.close()
        results: dict[str, float] = {}
        for metric in metrics:
            metric.gather()
            if task == "retrieval" and hasattr(metric, "set_ranks"):
                rerank_retrieval(plain_model, dataset, builder.collate, metric, self.context.device, self.autocast)
            values = metric.compute()
            for key, value in values.items():
                results[f"{split}/{name}/{key}"] = float(value)
            if name not in self.primary_keys and values:
                self.primary_keys[name] = metric.primary or next(iter(values))
        if write_predictions:
            whole = builder.split_predictions(dataset, metrics)  # every rank holds the gathered metrics
            if whole is not None:
                if self.context.is_main and self.predictions_dir is not None:
                    self._write_file(builder, name, split, whole, len(dataset))
            else:  # every rank takes part in the gather, even one without rows
                self._write_predictions(builder, name, split, rows)
        return results

    def _collect_predictions(self, builder, batch: Batch, outputs, real: int, size: int, indices, rows):
        if real < size:
            batch = batch.select(list(range(real)))
            outputs = _slice_outputs(outputs, real, size)
        try:
            formatted = builder.format_predictions(batch, outputs)
        except NotImplementedError:
            return None
        if len(formatted) == real:  # one row per sample: remember its dataset index for ordering
            rows.extend(zip(indices, formatted))
        else:
            rows.extend((None, row) for row in formatted)
        return rows

    def _write_predictions(self, builder, name: str, split: str, rows) -> None:
        everything = all_gather_object(rows)
        if any(part is None for part in everything):
            if self.context.is_main:
                log.info("dataset %r writes no prediction files; skipping them", name)
            return
        if not self.context.is_main or self.predictions_dir is None:
            return
        merged = [pair for part in everything for pair in part]
        if merged and all(index is not None for index, _ in merged):
            merged.sort(key=lambda pair: pair[0])
        self._write_file(builder, name, split, [row for _, row in merged], len(merged))

    def _write_file(self, builder, name: str, split: str, predictions: Any, count: int) -> None:
        path = self.predictions_dir / builder.predictions_file(split)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            builder.write_predictions(predictions, str(path))
        except NotImplementedError:
            return
        log.info("wrote %d %s predictions of %s to %s", count, split, name, path)
