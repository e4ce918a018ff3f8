"""``hasten ubn-report CONFIG --checkpoint PATH``: Table 2.1 for a trained model.

Builds the run's data and model from the config (no training), loads the
checkpoint's weights and compares, per BatchNorm layer, the features of the
labeled training samples with those of the unlabeled stream's samples (see
:mod:`hasten_ubn.diagnostics` for the definitions).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import torch

from hasten_ubn.diagnostics import LayerDistance, feature_distances, format_table


def model_inputs(dataset: Any, info: Any, resolution: int, batch_size: int, limit: int) -> Iterator[torch.Tensor]:
    """Eval-preprocessed model inputs of the first ``limit`` samples of ``dataset`` (vectors as float)."""
    from hasten.api import eval_batch

    for start in range(0, min(limit, len(dataset)), batch_size):
        rows = list(range(start, min(start + batch_size, limit, len(dataset))))
        images = dataset.__getitems__(rows)[0]
        yield eval_batch(images, resolution, info.mean, info.std)


def report(
    config: Any, checkpoint: str, *, max_images: int = 2000, layers: list[str] | None = None
) -> list[LayerDistance]:
    """Table 2.1 rows for ``config``'s model with the weights of ``checkpoint``."""
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
    resolution = config.data.resolution
    batch = config.eval.batch_size
    labeled = model_inputs(data.train, data.info, resolution, batch, max_images)
    unlabeled = model_inputs(data.unlabeled, data.info, resolution, batch, max_images)
    try:
        return feature_distances(task.model, labeled, unlabeled, layers=layers)
    except ValueError as error:
        raise UserError(f"ubn-report: {error}") from None


def run_report(args: argparse.Namespace) -> int:
    from hasten.api import load_config

    config = load_config(args.config, args.overrides)
    rows = report(config, args.checkpoint, max_images=args.max_images, layers=args.layers)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(format_table(rows))
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
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=run_report)
