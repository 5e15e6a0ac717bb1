"""Optimizers with parameter groups: no weight decay for biases/norms, per-module lr multipliers."""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from vlfw.errors import ConfigError
from vlfw.registry import OPTIMIZERS


def parameter_groups(model: nn.Module, weight_decay: float, no_decay: Iterable[str] = (),
                     lr_multipliers: Mapping[str, float] | None = None, lr: float = 1.0) -> list[dict[str, Any]]:
    """Group trainable parameters by (weight decay, lr multiplier).

    A parameter gets no weight decay when it is 1-d (biases, norm scales) or its name contains
    one of `no_decay`. Its lr is `lr` times the multiplier of the first `lr_multipliers` regex
    that matches (searched) its name, else 1.
    """
    no_decay = [str(p) for p in no_decay]
    multipliers = [(re.compile(str(pattern)), float(value)) for pattern, value in (lr_multipliers or {}).items()]
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        decay = 0.0 if parameter.ndim <= 1 or any(p in name for p in no_decay) else float(weight_decay)
        multiplier = next((m for pattern, m in multipliers if pattern.search(name)), 1.0)
        key = (decay, multiplier)
        if key not in groups:
            groups[key] = {"params": [], "param_names": [], "weight_decay": decay,
                           "lr": lr * multiplier, "lr_multiplier": multiplier}
        groups[key]["params"].append(parameter)
        groups[key]["param_names"].append(name)
    if not groups:
        raise ConfigError("the model has no trainable parameters")
    return list(groups.values())


FUSED_DEVICES = ("cpu", "cuda")


def implementation(groups: list[dict[str, Any]], config: Any) -> dict[str, bool]:
    """torch's `fused` / `foreach` switches for `optimizer.implementation`.

    `auto` (the default) uses the fused kernel when every parameter is a plain floating tensor on
    one CPU or CUDA device, else torch's own choice; `fused`, `foreach` and `for_loop` force one
    (a forced `fused` on unsupported parameters is torch's error). On the CPU the fused AdamW
    step is ~6x faster than the per-tensor loop torch picks there by default
    (tools/bench/optimizer_step.py); results differ from the loop in the last bits only.
    """
    choice = str(config.get("implementation", "auto") or "auto")
    if choice == "fused":
        return {"fused": True}
    if choice == "foreach":
        return {"foreach": True}
    if choice == "for_loop":
        return {"foreach": False}
    params = [p for group in groups for p in group["params"]]
    devices = {p.device for p in params}
    plain = all(type(p) in (torch.Tensor, nn.Parameter) and p.is_floating_point() for p in params)
    if plain and len(devices) == 1 and next(iter(devices)).type in FUSED_DEVICES:
        return {"fused": True}
    return {}


@OPTIMIZERS.register("adamw")
def adamw(groups: list[dict[str, Any]], config: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=float(config.lr), betas=tuple(float(b) for b in config.betas),
                             eps=float(config.eps), weight_decay=float(config.weight_decay),
                             **implementation(groups, config))


@OPTIMIZERS.register("sgd")
def sgd(groups: list[dict[str, Any]], config: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=float(config.lr), momentum=float(config.get("momentum", 0.9) or 0.0),
                           weight_decay=float(config.weight_decay), **implementation(groups, config))


def build_optimizer(model: nn.Module, config: Any) -> torch.optim.Optimizer:
    """The optimizer of `config` (the `optimizer` section) over `model`'s parameter groups."""
    groups = parameter_groups(model, float(config.weight_decay), config.get("no_decay") or (),
                              config.get("lr_multipliers") or {}, float(config.lr))
    return OPTIMIZERS.get(str(config.type))(groups, config)
