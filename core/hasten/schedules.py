"""Core learning-rate schedules: the baselines of docs/methods.md section 2.

Pure functions of the step (0-based ``step`` of ``total_steps`` = L):

* constant:          eps_t = eps_max
* cosine:            eps_t = 1/2 eps_max (cos(pi t / L) + 1)
* warm-up + cosine:  eps_t = t / t_w eps_max for t < t_w, else
                     1/2 eps_max (cos(pi (t - t_w) / (L - t_w)) + 1)

An optional floor ``final_lr`` rescales the annealed part to end at that
value instead of 0: eps = final + (eps - 0) * (eps_max - final) / eps_max.
"""

from __future__ import annotations

import math

from hasten.registry import REGISTRY


def constant(step: int, total_steps: int, max_lr: float, warmup_steps: int = 0, final_lr: float = 0.0) -> float:
    return max_lr


def cosine(step: int, total_steps: int, max_lr: float, warmup_steps: int = 0, final_lr: float = 0.0) -> float:
    value = 0.5 * max_lr * (math.cos(math.pi * step / total_steps) + 1.0)
    return _floor(value, max_lr, final_lr)


def warmup_cosine(
    step: int, total_steps: int, max_lr: float, warmup_steps: int = 0, final_lr: float = 0.0
) -> float:
    if step < warmup_steps:
        return step / warmup_steps * max_lr
    anneal = 0.5 * max_lr * (math.cos(math.pi * (step - warmup_steps) / (total_steps - warmup_steps)) + 1.0)
    return _floor(anneal, max_lr, final_lr)


def _floor(value: float, max_lr: float, final_lr: float) -> float:
    if final_lr <= 0.0:
        return value
    return final_lr + value * (max_lr - final_lr) / max_lr


REGISTRY.schedules.add("constant", constant)
REGISTRY.schedules.add("cosine", cosine)
REGISTRY.schedules.add("warmup_cosine", warmup_cosine)
