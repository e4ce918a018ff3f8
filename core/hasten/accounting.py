"""FLOP accounting with fvcore.

Convention (also logged as MLflow params): fvcore counts one fused
multiply-add as one FLOP (so its figures are half of
``torch.utils.flop_counter``'s); a training step costs forward + backward
with backward = ``backward_factor`` (2) x forward, i.e. 3x the forward count.
Counts are taken once per (module, input shape) in eval mode, under no_grad,
for a batch of one sample, and scaled by the batch size (every model here is
batch-linear in eval mode). Extra forwards a plugin makes (selection scoring,
hard-augment mining, UBN statistics pass, momentum encoders, kNN features)
are reported with :meth:`FlopAccountant.add_overhead` under the plugin's
name and kept separate from training FLOPs.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from hasten.models.common import model_unchanged

BACKWARD_FACTOR = 2.0

#: decimal prefixes for FLOP figures, largest first
MAC_PREFIXES = (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3))


def mac_scale(value: float) -> tuple[float, str]:
    """(divisor, unit) that makes ``value`` multiply-adds readable: (1e9, "GMAC")."""
    for prefix, scale in MAC_PREFIXES:
        if abs(value) >= scale:
            return scale, f"{prefix}MAC"
    return 1.0, "MAC"


def format_macs(value: float) -> str:
    """``value`` multiply-adds as text, e.g. ``251.3 GMAC``."""
    scale, unit = mac_scale(value)
    return f"{value / scale:.4g} {unit}"


def count_forward_flops(module: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...]) -> float:
    """fvcore FLOPs (multiply-adds) of one forward of ``module`` on ``example``.

    Runs in eval mode under no_grad and restores the module's mode, so no
    buffer (e.g. BatchNorm running statistics) changes.
    """
    with warnings.catch_warnings():  # fvcore's import uses torch.jit.script, deprecated in torch 2.14
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    inputs = example if isinstance(example, tuple) else (example,)
    # fvcore logs a warning per unsupported op (e.g. in-place adds): noise here.
    logging.getLogger("fvcore.nn.jit_analysis").setLevel(logging.ERROR)
    with model_unchanged(module):
        analysis = FlopCountAnalysis(module, inputs)
        analysis.set_op_handle("aten::scaled_dot_product_attention", _attention_flops)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        total = float(analysis.total())
    return total


def _attention_flops(inputs: list[Any], outputs: list[Any]) -> float:
    """fvcore handle for fused attention (fvcore has none): Q K^T and A V,
    (B, H, L, D) x (B, H, S, D) -> B*H*L*S*D + B*H*L*S*Dv multiply-adds."""
    from fvcore.nn.jit_handles import get_shape

    query, key, value = (get_shape(v) for v in inputs[:3])
    *batch, length, dim = query
    source = key[-2]
    value_dim = value[-1]
    leading = 1
    for size in batch:
        leading *= size
    return float(leading * length * source * (dim + value_dim))


class FlopAccountant:
    """Cumulative training and overhead FLOPs of a run.

    ``train`` counts the forward+backward of the samples this process trained
    on; ``overhead`` counts extra forwards by name. ``total`` is their sum.
    :meth:`metrics` reports the whole job: under torchrun every rank does the
    same work on its own share, so the per-process figures are multiplied by
    ``world_size``.
    """

    def __init__(
        self, backward_factor: float = BACKWARD_FACTOR, device: torch.device | None = None, world_size: int = 1
    ):
        self.backward_factor = backward_factor
        self.device = device or torch.device("cpu")
        self.world_size = world_size
        self.train = 0.0
        self.overhead: dict[str, float] = {}
        self._cache: dict[tuple[int, tuple[int, ...]], float] = {}

    # -- per-sample forward costs, cached
    def forward_per_sample(
        self,
        module: nn.Module,
        sample_shape: tuple[int, ...],
        make_input: Callable[[tuple[int, ...]], torch.Tensor] | None = None,
    ) -> float:
        """FLOPs of one forward of ``module`` on ONE sample of ``sample_shape``."""
        key = (id(module), tuple(sample_shape))
        cached = self._cache.get(key)
        if cached is None:
            param = next(module.parameters(), None)
            device = param.device if param is not None else self.device
            example = (
                make_input(sample_shape)
                if make_input is not None
                else torch.zeros((1, *sample_shape), device=device)
            )
            cached = self._cache[key] = count_forward_flops(module, example)
        return cached

    def train_step_flops(self, forward_per_sample: float, num_samples: int) -> float:
        return forward_per_sample * num_samples * (1.0 + self.backward_factor)

    # -- accumulation
    def add_train(self, flops: float) -> None:
        self.train += flops

    def add_overhead(self, name: str, flops: float) -> None:
        self.overhead[name] = self.overhead.get(name, 0.0) + flops

    @property
    def overhead_total(self) -> float:
        return sum(self.overhead.values())

    @property
    def total(self) -> float:
        return self.train + self.overhead_total

    def metrics(self) -> dict[str, float]:
        ranks = self.world_size
        out = {
            "flops/train": self.train * ranks,
            "flops/overhead": self.overhead_total * ranks,
            "flops/total": self.total * ranks,
        }
        for name, value in self.overhead.items():
            out[f"flops/overhead/{name}"] = value * ranks
        return out

    def state_dict(self) -> dict[str, object]:
        return {"train": self.train, "overhead": dict(self.overhead)}

    def load_state_dict(self, blob: dict[str, object]) -> None:
        self.train = float(blob["train"])  # type: ignore[arg-type]
        self.overhead = {str(k): float(v) for k, v in blob["overhead"].items()}  # type: ignore[attr-defined]
