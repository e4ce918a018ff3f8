"""Unsupervised Batch Normalization, the functional core (docs/methods.md section 1).

Standard BN normalises a labeled batch x with its own statistics. UBN builds
the combined batch n = {x, y} of the labeled batch x and an unlabeled batch y
and, per channel c,

    UBN(x_c) = gamma (x_c - mu(n_c)) / sigma(n_c) + beta,
    mu_hat <- lambda mu_hat + (1 - lambda) mu(n_c)   (running statistics from n),

with the loss on the labeled samples only. Two ways to compute it:

* :func:`two_step_forward` (the research's Fig. 2.1): (1) a no-grad forward of
  n in training mode records every selected BN layer's batch mean and
  (biased) variance and updates the running statistics from n; (2) the
  labeled forward normalises with those recorded statistics as constants
  (no running-statistics update, no gradient through mu, sigma).
* :func:`two_step_grad_forward` (beyond the research): step 1 as in
  two_step, recording also the unlabeled rows' sums per channel; in step 2
  each selected layer normalises x with the combined-batch mean and variance
  computed from x's own sums (with gradient) and y's recorded sums (as
  constants). The values equal two_step's; the gradient flows through the
  labeled share of the statistics, which two_step's constants cut.
* :func:`joint_forward`: one forward of the concatenation [x; y]; the output
  is cut to the labeled rows, so a loss on it is the masked loss. Gradients
  flow through the combined statistics.

Both are model-agnostic: they act on ``torch.nn.modules.batchnorm._BatchNorm``
layers (BatchNorm1d/2d/3d, SyncBatchNorm) found by name; BN layers not
selected behave exactly like standard BN on the labeled batch.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

Layers = list[tuple[str, _BatchNorm]]


def find_batchnorm(model: nn.Module, patterns: Sequence[str] | None = None) -> tuple[Layers, Layers]:
    """(selected, other) BatchNorm layers of ``model`` as (name, module) lists.

    ``patterns`` are fnmatch patterns on module names (``body.1``, ``layer3.*``);
    ``None`` selects every BN layer.
    """
    found = [(name, module) for name, module in model.named_modules() if isinstance(module, _BatchNorm)]
    if patterns is None:
        return found, []
    selected = [(n, m) for n, m in found if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    others = [(n, m) for n, m in found if not any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    return selected, others


def batch_moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of a BN input (N, C, ...): mu(n_c), sigma^2(n_c)."""
    dims = [0, *range(2, x.dim())]
    x = x.float()  # statistics in fp32 even under autocast, as BatchNorm computes them
    var, mean = torch.var_mean(x, dim=dims, correction=0)
    return mean, var


def _normalise(module: _BatchNorm, x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """BN with given statistics: no running-statistics update (``training=False`` semantics)."""
    return F.batch_norm(x, mean.to(x.dtype), var.to(x.dtype), module.weight, module.bias, False, 0.0, module.eps)


@contextmanager
def _overridden(
    layers: Layers, make_forward: Callable[[str, _BatchNorm], Callable[[Tensor], Tensor]]
) -> Iterator[None]:
    """Temporarily replace the forward of each layer (an instance attribute shadows the class method)."""
    try:
        for name, module in layers:
            module.forward = make_forward(name, module)  # type: ignore[method-assign,assignment]
        yield
    finally:
        for _, module in layers:
            module.__dict__.pop("forward", None)


@contextmanager
def recorded_statistics(layers: Layers) -> Iterator[dict[str, tuple[Tensor, Tensor]]]:
    """Record the batch (mean, biased var) each layer normalises with, keyed by name, during the block."""
    stats: dict[str, tuple[Tensor, Tensor]] = {}
    handles = []
    for name, module in layers:

        def hook(module: nn.Module, inputs: tuple[Tensor, ...], name: str = name) -> None:
            stats[name] = tuple(s.detach() for s in batch_moments(inputs[0]))  # type: ignore[assignment]

        handles.append(module.register_forward_pre_hook(hook))
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def fixed_statistics(layers: Layers, stats: dict[str, tuple[Tensor, Tensor]]) -> Iterator[None]:
    """During the block each layer normalises with ``stats[name]`` as constants and leaves its buffers alone."""

    def make(name: str, module: _BatchNorm) -> Callable[[Tensor], Tensor]:
        mean, var = stats[name]
        return lambda x: _normalise(module, x, mean, var)

    with _overridden(layers, make):
        yield


@contextmanager
def preserved_buffers(layers: Layers) -> Iterator[None]:
    """Restore the layers' running statistics (and batch counters) after the block."""
    saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False) if v is not None} for _, m in layers]
    try:
        yield
    finally:
        with torch.no_grad():
            for (_, module), buffers in zip(layers, saved, strict=True):
                for key, value in buffers.items():
                    getattr(module, key).copy_(value)


@contextmanager
def labeled_part_statistics(layers: Layers, num_labeled: int) -> Iterator[None]:
    """For a forward of [x; y]: each layer behaves as standard BN on x (statistics and running update
    from the labeled rows only) and normalises y with x's statistics (joint mode, unselected layers)."""

    def make(name: str, module: _BatchNorm) -> Callable[[Tensor], Tensor]:
        original = type(module).forward

        def forward(x: Tensor) -> Tensor:
            labeled = original(module, x[:num_labeled])
            mean, var = batch_moments(x[:num_labeled])
            return torch.cat([labeled, _normalise(module, x[num_labeled:], mean, var)])

        return forward

    with _overridden(layers, make):
        yield


def two_step_forward(
    model: nn.Module, labeled: Tensor, unlabeled: Tensor, selected: Layers, others: Layers = ()  # type: ignore[assignment]
) -> Any:
    """UBN's two steps; returns the labeled forward's output (differentiable).

    Step 1 runs ``model`` on [labeled; unlabeled] under no_grad (training
    mode: every selected layer's running statistics get the combined-batch
    update; unselected layers' buffers are restored). Step 2 runs ``model`` on
    ``labeled`` with the selected layers normalising by the recorded combined
    statistics, as constants.
    """
    combined = torch.cat([labeled, unlabeled])
    with torch.no_grad(), preserved_buffers(list(others)), recorded_statistics(selected) as stats:
        model(combined)
    with fixed_statistics(selected, stats):
        return model(labeled)


#: per layer: the combined batch's mean m, the unlabeled rows' sum of (y - m) and of (y - m)^2, their count
UnlabeledSums = tuple[Tensor, Tensor, Tensor, int]


@contextmanager
def recorded_unlabeled_sums(layers: Layers, num_labeled: int) -> Iterator[dict[str, UnlabeledSums]]:
    """For a forward of [x; y]: per layer (combined mean m, sum over y of (y - m), sum of (y - m)^2, y's count
    per channel), detached. Sums are taken about the combined mean m so that step 2's variance is stable."""
    sums: dict[str, UnlabeledSums] = {}
    handles = []
    for name, module in layers:

        def hook(module: nn.Module, inputs: tuple[Tensor, ...], name: str = name) -> None:
            z = inputs[0].detach().float()
            dims = [0, *range(2, z.dim())]
            centre = z.mean(dim=dims)
            shape = [1, -1] + [1] * (z.dim() - 2)
            y = z[num_labeled:] - centre.view(shape)
            count = y.numel() // max(1, y.shape[1]) if y.dim() > 1 else y.numel()
            sums[name] = (centre, y.sum(dim=dims), (y * y).sum(dim=dims), count)

        handles.append(module.register_forward_pre_hook(hook))
    try:
        yield sums
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def labeled_share_statistics(layers: Layers, sums: dict[str, UnlabeledSums]) -> Iterator[None]:
    """During the block each layer normalises its input x with the combined-batch statistics (eq. 2.4) made of
    x's sums (differentiable) and the recorded unlabeled sums (constants); buffers are left alone."""

    def make(name: str, module: _BatchNorm) -> Callable[[Tensor], Tensor]:
        centre, sum_y, sq_y, count_y = sums[name]

        def forward(x: Tensor) -> Tensor:
            z = x.float()
            dims = [0, *range(2, z.dim())]
            shape = [1, -1] + [1] * (z.dim() - 2)
            d = z - centre.view(shape)
            count = z.numel() // z.shape[1] + count_y
            shift = (d.sum(dim=dims) + sum_y) / count  # combined mean - centre
            var = ((d * d).sum(dim=dims) + sq_y) / count - shift * shift  # biased, as BatchNorm normalises
            # By hand: F.batch_norm takes no gradient through given statistics.
            out = (d - shift.view(shape)) * torch.rsqrt(var.view(shape) + module.eps)
            if module.weight is not None:
                out = out * module.weight.view(shape) + module.bias.view(shape)
            return out.to(x.dtype)

        return forward

    with _overridden(layers, make):
        yield


def two_step_grad_forward(
    model: nn.Module, labeled: Tensor, unlabeled: Tensor, selected: Layers, others: Layers = ()  # type: ignore[assignment]
) -> Any:
    """Step 1 as :func:`two_step_forward` (running statistics from the combined batch); step 2 normalises the
    labeled forward with the combined statistics, gradient through the labeled share only."""
    combined = torch.cat([labeled, unlabeled])
    with torch.no_grad(), preserved_buffers(list(others)), recorded_unlabeled_sums(selected, len(labeled)) as sums:
        model(combined)
    with labeled_share_statistics(selected, sums):
        return model(labeled)


def slice_rows(output: Any, stop: int) -> Any:
    """The first ``stop`` rows of a model output (a tensor, or a list/tuple/dict of them)."""
    if isinstance(output, Tensor):
        return output[:stop]
    if isinstance(output, list | tuple):
        return type(output)(slice_rows(o, stop) for o in output)
    if isinstance(output, dict):
        return {k: slice_rows(v, stop) for k, v in output.items()}
    return output


def joint_forward(model: nn.Module, labeled: Tensor, unlabeled: Tensor, others: Layers = ()) -> Any:  # type: ignore[assignment]
    """One forward of [labeled; unlabeled]; returns the labeled rows of the output (a loss on them is
    the loss masked to the labeled part). Gradients flow through the combined statistics."""
    num_labeled = labeled.shape[0]
    with labeled_part_statistics(list(others), num_labeled):
        output = model(torch.cat([labeled, unlabeled]))
    return slice_rows(output, num_labeled)


#: the two UBN forwards (``plugins.ubn.mode``)
Mode = Literal["two_step", "two_step_grad", "joint"]


class UBNModel(nn.Module):
    """Wraps a model so that ``wrapper(x)`` is the UBN forward of the labeled inputs ``x`` with the
    unlabeled inputs set by :meth:`set_unlabeled` for this step. Hand it to a task's ``forward`` in
    place of the model: the task's loss then trains with UBN, whatever the task."""

    def __init__(self, model: nn.Module, mode: str, selected: Layers, others: Layers) -> None:
        super().__init__()
        if mode not in get_args(Mode):
            raise ValueError(f"mode must be one of {', '.join(get_args(Mode))}, got {mode!r}")
        self.inner = model
        self.mode = mode
        # Plain lists (not submodules): the layers belong to ``inner``.
        self._selected = selected
        self._others = others
        self._unlabeled: Tensor | None = None

    def set_unlabeled(self, inputs: Tensor | None) -> None:
        self._unlabeled = inputs

    def forward(self, x: Tensor) -> Any:
        if self._unlabeled is None:
            raise RuntimeError("UBNModel: no unlabeled inputs set for this step")
        unlabeled, self._unlabeled = self._unlabeled, None  # one step's inputs serve one forward
        if self.mode == "two_step":
            return two_step_forward(self.inner, x, unlabeled, self._selected, self._others)
        if self.mode == "two_step_grad":
            return two_step_grad_forward(self.inner, x, unlabeled, self._selected, self._others)
        return joint_forward(self.inner, x, unlabeled, self._others)
