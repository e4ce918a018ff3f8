"""Optimizers: the ``optimizers`` catalog of the registry and the one place that builds one.

``optim.name`` picks a registered optimizer (``hasten components`` lists
them; a plugin adds its own with ``registry.optimizers.add(name, factory)``).
A factory takes the trainable parameters and the ``optim`` config section and
returns a ``torch.optim.Optimizer``. The engine writes ``state.lr`` into every
parameter group's ``lr`` each step, and ``state.momentum`` into ``momentum``
(SGD-like) or the first of ``betas`` (Adam-like), whichever the group has.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

from hasten.registry import REGISTRY

if TYPE_CHECKING:
    from hasten.config import Config, OptimConfig


def sgd(params: Iterable[torch.nn.Parameter], optim: OptimConfig) -> torch.optim.Optimizer:
    """SGD with momentum (optim.nesterov: Nesterov's) and L2 weight decay."""
    return torch.optim.SGD(
        params, lr=optim.lr, momentum=optim.momentum, nesterov=optim.nesterov and optim.momentum > 0,
        weight_decay=optim.weight_decay,
    )


def adamw(params: Iterable[torch.nn.Parameter], optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW: Adam with decoupled weight decay (optim.betas)."""
    return torch.optim.AdamW(params, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)


REGISTRY.optimizers.add("sgd", sgd)
REGISTRY.optimizers.add("adamw", adamw)


def build_optimizer(config: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer ``optim.name`` over ``model``'s trainable parameters."""
    factory = REGISTRY.optimizers.get(config.optim.name, key="optim.name")
    return factory([p for p in model.parameters() if p.requires_grad], config.optim)  # type: ignore[no-any-return]


def set_lr_and_momentum(optimizer: torch.optim.Optimizer, lr: float, momentum: float) -> None:
    """Write this step's scheduled ``lr`` and ``momentum`` into every parameter group (``momentum``:
    SGD-like groups' ``momentum``, Adam-like groups' first beta)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if "betas" in group:
            group["betas"] = (momentum, group["betas"][1])
        elif "momentum" in group:
            group["momentum"] = momentum
