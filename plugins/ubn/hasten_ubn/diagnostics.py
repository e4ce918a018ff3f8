"""Diagnostics of the UBN study, for any model with BatchNorm layers (docs/methods.md section 1).

* :func:`feature_distances` -- Table 2.1: per BN layer, how the labeled
  samples' features differ from the unlabeled samples' features.
* :func:`mc_bn_predict` -- Monte-Carlo BN (Teye et al. 2018): predictions of
  the same inputs under BN statistics drawn from different unlabeled batches;
  the spread is a predictive uncertainty.
* :func:`mc_bn_uncertainty` -- how well that spread flags wrong predictions:
  accuracy, mean spread of right and wrong predictions, and :func:`auroc` of
  the spread as a score for "this prediction is wrong".

Definitions used in the table (per feature = per BN channel; a conv layer's
channel contributes every spatial position of every sample). The features are
each BN layer's *inputs*, in eval mode, standardised per feature by the pooled
labeled+unlabeled mean and std so that distances compare across layers:

* ``pearson``: Pearson correlation of the two histograms (densities on a common
  grid of ``bins`` bins over the pooled range); 1 = same shape.
* ``kl`` = KL(labeled || unlabeled), ``reverse_kl`` = KL(unlabeled || labeled),
  on the same histograms with ``1e-6`` added to every bin.
* ``wasserstein``: 1-D Wasserstein-1 distance between the labeled and the
  unlabeled samples (``scipy.stats.wasserstein_distance``).
* ``wasserstein_uu``: the same between two random halves of the unlabeled
  samples: the sanity level of two draws of one distribution.
* ``ks_fraction``: fraction of features whose two-sample Kolmogorov-Smirnov
  test rejects equality at ``alpha`` (0.05).

Every value but ``ks_fraction`` is the mean over the layer's features.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from hasten.api import model_unchanged
from hasten_ubn.ubn import Layers, find_batchnorm, fixed_statistics, preserved_buffers, recorded_statistics

_EPS = 1e-6


@torch.no_grad()
def batchnorm_inputs(model: nn.Module, inputs: Iterable[Tensor], layers: Layers) -> dict[str, Tensor]:
    """Each layer's input features in eval mode, as (samples, channels) float64 on the CPU.

    ``inputs`` is an iterable of model-ready batches (eval preprocessing done).
    """
    collected: dict[str, list[Tensor]] = {name: [] for name, _ in layers}
    handles = []
    for name, module in layers:

        def hook(module: nn.Module, args: tuple[Tensor, ...], name: str = name) -> None:
            x = args[0].detach()
            # (N, C, ...) -> (N * positions, C): every position is a sample of the channel's feature.
            collected[name].append(x.transpose(0, 1).reshape(x.shape[1], -1).T.double().cpu())

        handles.append(module.register_forward_pre_hook(hook))
    try:
        with model_unchanged(model):
            for batch in inputs:
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts) for name, parts in collected.items() if parts}


@dataclass
class LayerDistance:
    """Table 2.1's row for one BN layer (definitions in the module docstring)."""

    layer: str
    features: int
    pearson: float
    kl: float
    reverse_kl: float
    wasserstein: float
    wasserstein_uu: float
    ks_fraction: float


def _histograms(labeled: np.ndarray, unlabeled: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature densities on a common grid: (features, bins) each, rows summing to 1."""
    low = np.minimum(labeled.min(0), unlabeled.min(0))
    high = np.maximum(labeled.max(0), unlabeled.max(0))
    width = np.maximum(high - low, _EPS)

    def hist(values: np.ndarray) -> np.ndarray:
        index = np.clip(((values - low) / width * bins).astype(np.int64), 0, bins - 1)
        counts = np.zeros((values.shape[1], bins))
        for feature in range(values.shape[1]):  # bincount per feature: features, not samples
            counts[feature] = np.bincount(index[:, feature], minlength=bins)
        return counts / counts.sum(1, keepdims=True)

    return hist(labeled), hist(unlabeled)


def layer_distance(
    name: str, labeled: Tensor, unlabeled: Tensor, *, bins: int = 30, alpha: float = 0.05, seed: int = 0
) -> LayerDistance:
    """Table 2.1's statistics of one layer from (samples, features) labeled and unlabeled features."""
    from scipy import stats

    if labeled.shape[0] < 2 or unlabeled.shape[0] < 4:
        raise ValueError("need at least 2 labeled and 4 unlabeled feature samples")
    pooled = torch.cat([labeled, unlabeled])
    mean, std = pooled.mean(0), pooled.std(0).clamp_min(_EPS)
    lab = ((labeled - mean) / std).numpy()
    unl = ((unlabeled - mean) / std).numpy()
    p, q = _histograms(lab, unl, bins)
    pearson = [
        float(np.corrcoef(p[f], q[f])[0, 1]) if p[f].std() > 0 and q[f].std() > 0 else 1.0 for f in range(p.shape[0])
    ]
    ps, qs = p + _EPS, q + _EPS
    ps, qs = ps / ps.sum(1, keepdims=True), qs / qs.sum(1, keepdims=True)
    kl = (ps * np.log(ps / qs)).sum(1)
    reverse = (qs * np.log(qs / ps)).sum(1)
    order = np.random.default_rng(seed).permutation(unl.shape[0])
    half_a, half_b = unl[order[: len(order) // 2]], unl[order[len(order) // 2 :]]
    features = lab.shape[1]
    wasserstein = [stats.wasserstein_distance(lab[:, f], unl[:, f]) for f in range(features)]
    wasserstein_uu = [stats.wasserstein_distance(half_a[:, f], half_b[:, f]) for f in range(features)]
    pvalues = [stats.ks_2samp(lab[:, f], unl[:, f]).pvalue for f in range(features)]
    return LayerDistance(
        layer=name,
        features=features,
        pearson=float(np.mean(pearson)),
        kl=float(kl.mean()),
        reverse_kl=float(reverse.mean()),
        wasserstein=float(np.mean(wasserstein)),
        wasserstein_uu=float(np.mean(wasserstein_uu)),
        ks_fraction=float(np.mean(np.asarray(pvalues) < alpha)),
    )


def feature_distances(
    model: nn.Module,
    labeled: Iterable[Tensor],
    unlabeled: Iterable[Tensor],
    *,
    layers: Sequence[str] | None = None,
    bins: int = 30,
    alpha: float = 0.05,
    max_samples: int = 20_000,
    seed: int = 0,
) -> list[LayerDistance]:
    """Table 2.1 for every (selected) BN layer of ``model``: labeled vs unlabeled input features.

    ``labeled`` / ``unlabeled`` are iterables of model-ready input batches.
    Each layer keeps at most ``max_samples`` feature rows per side (a seeded
    random subset), which bounds the KS and Wasserstein cost for conv layers.
    """
    selected, _ = find_batchnorm(model, layers)
    if not selected:
        raise ValueError("the model has no (selected) BatchNorm layer")
    feats_l = batchnorm_inputs(model, labeled, selected)
    feats_u = batchnorm_inputs(model, unlabeled, selected)
    generator = torch.Generator().manual_seed(seed)

    def cap(x: Tensor) -> Tensor:
        if x.shape[0] <= max_samples:
            return x
        return x[torch.randperm(x.shape[0], generator=generator)[:max_samples]]

    return [
        layer_distance(name, cap(feats_l[name]), cap(feats_u[name]), bins=bins, alpha=alpha, seed=seed)
        for name, _ in selected
    ]


def format_table(rows: Sequence[LayerDistance]) -> str:
    """Table 2.1 as aligned text."""
    header = f"{'layer':<24} {'feat':>5} {'pearson':>8} {'KL':>8} {'revKL':>8} {'W(L,U)':>8} {'W(U,U)':>8} {'KS<a':>6}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.layer:<24} {r.features:>5} {r.pearson:>8.3f} {r.kl:>8.4f} {r.reverse_kl:>8.4f} "
            f"{r.wasserstein:>8.4f} {r.wasserstein_uu:>8.4f} {r.ks_fraction:>6.1%}"
        )
    return "\n".join(lines)


@torch.no_grad()
def mc_bn_predict(
    model: nn.Module, inputs: Tensor, statistics_batches: Sequence[Tensor], *, layers: Sequence[str] | None = None
) -> tuple[Tensor, Tensor]:
    """Monte-Carlo BN: softmax predictions of ``inputs`` under each batch's BN statistics.

    For every batch in ``statistics_batches`` (e.g. [labeled; unlabeled]
    batches drawn like UBN's training batches) the BN layers take that batch's
    statistics; ``inputs`` are then predicted with them. Returns the mean and
    the standard deviation over the batches of the class probabilities, each
    (N, classes). The model's buffers are left as they were.
    """
    selected, _ = find_batchnorm(model, layers)
    if not selected:
        raise ValueError("the model has no (selected) BatchNorm layer")
    probabilities = []
    with model_unchanged(model):
        for batch in statistics_batches:
            model.train()
            with preserved_buffers(selected), recorded_statistics(selected) as stats:
                model(batch)
            model.eval()
            with fixed_statistics(selected, stats):
                probabilities.append(torch.softmax(model(inputs).float(), dim=1))
    stacked = torch.stack(probabilities)
    return stacked.mean(0), stacked.std(0, correction=0)


def auroc(scores: Tensor, positives: Tensor) -> float:
    """Area under the ROC curve of ``scores`` for the boolean ``positives``: the probability that a random
    positive scores above a random negative, ties counting one half (Mann-Whitney U / (P x N)).
    NaN when either class is empty."""
    scores = scores.double().flatten()
    positives = positives.bool().flatten()
    count_pos = int(positives.sum())
    count_neg = positives.numel() - count_pos
    if count_pos == 0 or count_neg == 0:
        return float("nan")
    order = torch.argsort(scores)
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=torch.float64)
    # tied scores share the mean of their ranks
    values, inverse = torch.unique(scores, return_inverse=True)
    rank_sums = torch.zeros(values.numel(), dtype=torch.float64).index_add_(0, inverse, ranks)
    counts = torch.zeros(values.numel(), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(ranks))
    ranks = (rank_sums / counts)[inverse]
    u = float(ranks[positives].sum()) - count_pos * (count_pos + 1) / 2
    return u / (count_pos * count_neg)


@dataclass
class MCBNSummary:
    """Monte-Carlo BN uncertainty vs correctness on one evaluation set."""

    samples: int
    passes: int
    accuracy: float  # of the MC mean prediction
    wrong: int
    std_correct: float  # mean spread (std over passes of the predicted class's probability), right predictions
    std_wrong: float  # the same, wrong predictions
    auroc_wrong: float  # AUROC of the spread as a score for a wrong prediction (0.5 = uninformative)


def mc_bn_uncertainty(mean: Tensor, std: Tensor, labels: Tensor, passes: int) -> MCBNSummary:
    """Score :func:`mc_bn_predict`'s output against the true ``labels``: the prediction is the class of
    highest mean probability, its uncertainty the std over passes of that class's probability."""
    predicted = mean.argmax(1)
    spread = std.gather(1, predicted[:, None])[:, 0].double()
    wrong = predicted != labels
    nan = float("nan")
    return MCBNSummary(
        samples=int(labels.numel()),
        passes=passes,
        accuracy=float((~wrong).double().mean()),
        wrong=int(wrong.sum()),
        std_correct=float(spread[~wrong].mean()) if bool((~wrong).any()) else nan,
        std_wrong=float(spread[wrong].mean()) if bool(wrong.any()) else nan,
        auroc_wrong=auroc(spread, wrong),
    )
