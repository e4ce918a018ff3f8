"""``hasten linear-probe CONFIG --checkpoint PATH``: linear evaluation of a frozen backbone.

The backbone of the checkpoint's task (``blob["model"]``) is frozen; its
L2-free ``forward_features`` of every train and val image (whole image at
``data.resolution``, no augmentation) are computed once and standardised
with the train statistics (the BatchNorm-without-affine that MAE's linear
probe puts before the classifier). A new linear layer is trained on them with
its own short schedule (SGD momentum 0.9, cosine LR, ``--epochs``,
``--lr``, ``--batch-size``), and top-1 on the val split is printed and, when
tracking is on, logged to MLflow as ``linear_probe/acc1`` (into the training
run when its run directory names one, else into a new run).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hasten.checkpoint import load_checkpoint
from hasten.config import Config
from hasten.data.augment import eval_batch
from hasten.data.module import DataModule
from hasten.data.stream import eval_batches
from hasten.errors import UserError
from hasten.models import model_unchanged
from hasten.registry import REGISTRY


def extract_features(backbone: Any, dataset: Any, info: Any, resolution: int, device: torch.device,
                     batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """``forward_features`` and labels of a whole dataset (eval mode, whole images; the backbone unchanged)."""
    features, labels = [], []
    with model_unchanged(backbone):
        for batch in eval_batches(dataset, batch_size):
            images = batch.images.to(device)
            inputs = eval_batch(images, resolution, info.mean, info.std)
            features.append(backbone.forward_features(inputs).float())
            labels.append(batch.labels.to(device))
    return torch.cat(features), torch.cat(labels)


def train_linear(train_x: Tensor, train_y: Tensor, num_classes: int, *, epochs: int, lr: float,
                 batch_size: int, seed: int) -> nn.Linear:
    """SGD (momentum 0.9) with a per-step cosine LR on fixed features; returns the layer."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layer = nn.Linear(train_x.shape[1], num_classes).to(train_x.device)
    optimizer = torch.optim.SGD(layer.parameters(), lr=lr, momentum=0.9)
    n = train_x.shape[0]
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = epochs * steps_per_epoch
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(train_x.device)
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            for group in optimizer.param_groups:
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(layer(train_x[index]), train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    return layer


def linear_probe(config: Config, checkpoint: str | Path, *, epochs: int = 100, lr: float = 0.1,
                 batch_size: int = 256) -> dict[str, float]:
    """Top-1 of a linear classifier on the frozen backbone of ``checkpoint`` (``linear_probe/acc1``)."""
    from hasten.engine import resolve_device

    device = resolve_device(config.run.device)
    data = DataModule(config)
    if data.info.num_classes < 2:
        raise UserError(f"data.dataset: {config.data.dataset!r} has no labels to probe with")
    torch.manual_seed(config.run.seed)
    task = REGISTRY.tasks.get(config.task.name, key="task.name")(config, data.info)
    blob = load_checkpoint(checkpoint)
    try:
        task.model.load_state_dict(blob["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"--checkpoint {checkpoint}: does not match the model of this config ({first})") from None
    model = task.model.to(device).requires_grad_(False)
    backbone = getattr(model, "backbone", model)  # ssl: SSLNetwork.backbone; classification: the model
    train_x, train_y = extract_features(backbone, data.train, data.info, config.data.resolution, device)
    val_x, val_y = extract_features(backbone, data.val, data.info, config.data.resolution, device)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    layer = train_linear((train_x - mean) / std, train_y, data.info.num_classes, epochs=epochs, lr=lr,
                         batch_size=batch_size, seed=config.run.seed)
    with torch.no_grad():
        val_acc = layer((val_x - mean) / std).argmax(1).eq(val_y).float().mean().item()
        train_acc = layer((train_x - mean) / std).argmax(1).eq(train_y).float().mean().item()
    return {
        "linear_probe/acc1": val_acc,
        "linear_probe/train_acc1": train_acc,
        "linear_probe/step": float(blob["step"]),
    }


def log_to_mlflow(config: Config, checkpoint: str | Path, metrics: dict[str, float], params: dict[str, Any]) -> str:
    """Log into the training run (RUN_DIR/mlflow_run_id) if there is one, else a new run; returns its id."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from hasten.builtins.tracking import RUN_ID_FILE, resolve_uri

    uri = resolve_uri(config.tracking.uri)
    client = MlflowClient(tracking_uri=uri)
    id_file = Path(checkpoint).resolve().parent.parent / RUN_ID_FILE
    run_id = id_file.read_text().strip() if id_file.is_file() else ""
    if not run_id:
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.set_experiment(config.tracking.experiment)
        run = client.create_run(experiment.experiment_id, run_name=f"{config.run.name}-linear-probe")
        run_id = run.info.run_id
        for key, value in params.items():
            client.log_param(run_id, f"linear_probe.{key}", str(value))
        client.set_terminated(run_id)
    step = int(metrics.get("linear_probe/step", 0))
    for key, value in metrics.items():
        if key != "linear_probe/step":
            client.log_metric(run_id, key, value, step=step)
    return run_id


def cmd_linear_probe(args: argparse.Namespace) -> int:
    from hasten.config import load_config

    config = load_config(args.config, args.overrides)
    if args.epochs < 1 or args.lr <= 0 or args.batch_size < 1:
        raise UserError("linear-probe: --epochs and --batch-size must be >= 1 and --lr > 0")
    metrics = linear_probe(config, args.checkpoint, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size)
    print(f"linear probe top-1: {metrics['linear_probe/acc1']:.4f} "
          f"(train {metrics['linear_probe/train_acc1']:.4f}, checkpoint step {int(metrics['linear_probe/step'])})")
    if config.tracking.enabled:
        run_id = log_to_mlflow(config, args.checkpoint, metrics,
                               {"checkpoint": args.checkpoint, "epochs": args.epochs, "lr": args.lr,
                                "batch_size": args.batch_size})
        print(f"logged to MLflow run {run_id}")
    return 0


def add_command(subparsers: Any) -> None:
    from hasten.commands.arguments import add_config_arguments

    parser = subparsers.add_parser(
        "linear-probe", help="train a linear classifier on the frozen backbone of a checkpoint; print top-1"
    )
    add_config_arguments(parser)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint of the run (RUN_DIR/checkpoints/step-*.pt)")
    parser.add_argument("--epochs", type=int, default=100, help="epochs over the fixed features (default 100)")
    parser.add_argument("--lr", type=float, default=0.1, help="peak learning rate of the cosine schedule (0.1)")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size (256)")
    parser.set_defaults(handler=cmd_linear_probe)
