"""``hasten ubn-report CONFIG --checkpoint PATH [--mc-bn T]``: Table 2.1 (and MC-BN) for a trained model.

Builds the run's data and model from the config (no training), loads the
checkpoint's weights and compares, per BatchNorm layer, the features of the
labeled training samples with those of the unlabeled stream's samples (see
:mod:`hasten_ubn.diagnostics` for the definitions).

``--mc-bn T`` (classification) adds Monte-Carlo BN uncertainty: the
validation images are predicted (a seeded random ``--max-images`` of them) T times, each time with the BN statistics of
one random training batch drawn as the run trained -- [labeled; unlabeled]
when the config enables ``plugins.ubn``, labeled only otherwise (eval
preprocessing, no augmentation) -- and the spread of the predicted class's
probability is scored against correctness (:func:`mc_bn_uncertainty`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import torch

from hasten_ubn.diagnostics import (
    LayerDistance,
    MCBNSummary,
    feature_distances,
    format_table,
    mc_bn_predict,
    mc_bn_uncertainty,
)


def sample_rows(size: int, limit: int, seed: int = 0) -> list[int]:
    """All rows when ``size <= limit``, else a seeded random ``limit`` of them: image folders list their
    samples class by class, so the first ``limit`` would hold only a few classes."""
    if size <= limit:
        return list(range(size))
    return sorted(torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:limit].tolist())


def model_inputs(dataset: Any, info: Any, resolution: int, batch_size: int, limit: int) -> Iterator[torch.Tensor]:
    """Eval-preprocessed model inputs of ``limit`` samples of ``dataset`` (:func:`sample_rows`)."""
    rows = sample_rows(len(dataset), limit)
    for start in range(0, len(rows), batch_size):
        images = dataset.__getitems__(rows[start:start + batch_size])[0]
        yield eval_inputs(images, resolution, info)


def load_trained(config: Any, checkpoint: str) -> tuple[Any, Any]:
    """``config``'s data and task with the model's weights from ``checkpoint`` (the unlabeled stream required)."""
    from hasten.api import UserError, build_data_and_task, load_checkpoint

    data, task = build_data_and_task(config)  # datasets/models the enabled plugins add included
    if data.unlabeled is None:
        raise UserError(
            "ubn-report: the config has no unlabeled data: set data.unlabeled or data.labeled_fraction"
        )
    blob = load_checkpoint(checkpoint)
    try:
        task.model.load_state_dict(blob["model"])
    except RuntimeError as error:
        raise UserError(
            f"--checkpoint {checkpoint}: its weights do not fit model {config.model.name!r}: {error}"
        ) from None
    return data, task


def report(
    config: Any, checkpoint: str, *, max_images: int = 2000, layers: list[str] | None = None,
    loaded: tuple[Any, Any] | None = None,
) -> list[LayerDistance]:
    """Table 2.1 rows for ``config``'s model with the weights of ``checkpoint``."""
    from hasten.api import UserError

    data, task = loaded or load_trained(config, checkpoint)
    resolution = config.data.resolution
    batch = config.eval.batch_size
    labeled = model_inputs(data.train, data.info, resolution, batch, max_images)
    unlabeled = model_inputs(data.unlabeled, data.info, resolution, batch, max_images)
    try:
        return feature_distances(task.model, labeled, unlabeled, layers=layers)
    except ValueError as error:
        raise UserError(f"ubn-report: {error}") from None


def _random_inputs(dataset: Any, info: Any, resolution: int, size: int, generator: torch.Generator) -> torch.Tensor:
    rows = torch.randperm(len(dataset), generator=generator)[:size].tolist()
    images = dataset.__getitems__(rows)[0]
    return eval_inputs(images, resolution, info)


def eval_inputs(images: torch.Tensor, resolution: int, info: Any) -> torch.Tensor:
    from hasten.api import eval_batch

    return eval_batch(images, resolution, info.mean, info.std)


def mc_bn_report(
    config: Any, checkpoint: str, passes: int, *, max_images: int = 2000, seed: int = 0,
    loaded: tuple[Any, Any] | None = None,
) -> MCBNSummary:
    """Monte-Carlo BN uncertainty of ``config``'s classifier on its validation set (module docstring)."""
    from hasten.api import UserError

    if passes < 2:
        raise UserError(f"ubn-report: --mc-bn: {passes} passes; a spread needs at least 2")
    data, task = loaded or load_trained(config, checkpoint)
    if config.task.name != "classification":
        raise UserError(f"ubn-report: --mc-bn: task {config.task.name!r}; MC-BN uncertainty needs "
                        "task.name classification (class probabilities)")
    resolution = config.data.resolution
    generator = torch.Generator().manual_seed(seed)
    labeled_size = config.data.batch_size
    ubn = "ubn" in config.plugins
    unlabeled_size = (config.plugin_settings("ubn").get("unlabeled_batch_size") or data.unlabeled_batch_size
                      or labeled_size) if ubn else 0
    batches = []
    for _ in range(passes):
        parts = [_random_inputs(data.train, data.info, resolution, labeled_size, generator)]
        if ubn:
            parts.append(_random_inputs(data.unlabeled, data.info, resolution, unlabeled_size, generator))
        batches.append(torch.cat(parts))
    images, labels = data.val.__getitems__(sample_rows(len(data.val), max_images, seed))[:2]
    inputs = eval_inputs(images, resolution, data.info)
    selected = config.plugin_settings("ubn").get("layers") if ubn else None
    try:
        mean, std = mc_bn_predict(task.model, inputs, batches, layers=selected)
    except ValueError as error:
        raise UserError(f"ubn-report: {error}") from None
    return mc_bn_uncertainty(mean, std, labels, passes)


def run_report(args: argparse.Namespace) -> int:
    from hasten.api import UserError, load_config

    if args.mc_bn is not None and args.mc_bn < 2:
        raise UserError(f"ubn-report: --mc-bn: {args.mc_bn} passes; a spread needs at least 2")
    config = load_config(args.config, args.overrides)
    loaded = load_trained(config, args.checkpoint)
    rows = report(config, args.checkpoint, max_images=args.max_images, layers=args.layers, loaded=loaded)
    mc = (mc_bn_report(config, args.checkpoint, args.mc_bn, max_images=args.max_images, loaded=loaded)
          if args.mc_bn is not None else None)
    if args.json:
        rows_json = [asdict(r) for r in rows]
        print(json.dumps(rows_json if mc is None else {"distances": rows_json, "mc_bn": asdict(mc)}, indent=2))
    else:
        print(format_table(rows))
        if mc is not None:
            print(f"\nMC-BN, {mc.passes} passes, {mc.samples} validation samples: accuracy {mc.accuracy:.4f}, "
                  f"{mc.wrong} wrong; spread (std of the predicted class's probability) right {mc.std_correct:.4f}, "
                  f"wrong {mc.std_wrong:.4f}; AUROC of the spread for wrong predictions {mc.auroc_wrong:.3f}")
    return 0


def add_report_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from hasten.api import add_config_arguments

    parser = subparsers.add_parser(
        "ubn-report",
        help="per-BN-layer distances between labeled and unlabeled features (UBN's Table 2.1)",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--checkpoint", required=True, help="a checkpoint of a run of CONFIG (runs/<name>/checkpoints/...)"
    )
    parser.add_argument("--max-images", type=int, default=2000, help="samples per side (default 2000)")
    parser.add_argument("--layers", nargs="+", default=None, help="fnmatch patterns of BN module names (default: all)")
    parser.add_argument("--mc-bn", type=int, default=None, metavar="T",
                        help="also Monte-Carlo BN uncertainty over T stochastic-BN passes (classification)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=run_report)
