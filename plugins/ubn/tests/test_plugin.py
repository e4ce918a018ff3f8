"""The ubn plugin in real runs: data streams, errors, FLOP accounting, the report command."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from hasten.data.module import DataModule
from hasten.engine import Trainer, train
from hasten.errors import UserError
from hasten_ubn.report import add_report_command


def test_labeled_fraction_splits_the_train_set_into_disjoint_streams(tiny_config) -> None:
    config = tiny_config(plugins={"ubn": {}})
    data = DataModule(config)
    counts = torch.bincount(data.train.dataset.targets, minlength=10)  # the full train split
    # 25% of each class, rounded (stratified); the rest is the unlabeled stream.
    assert len(data.train) == int((counts.double() * 0.25).round().sum())
    assert len(data.unlabeled) == 256 - len(data.train)
    assert torch.bincount(data.train.targets, minlength=10).min() >= 1  # every class keeps labels
    assert not set(data.train.indices.tolist()) & set(data.unlabeled.indices.tolist())
    assert bool((data.unlabeled.targets == -1).all())
    # Both streams shard by rank: two ranks see disjoint halves of the unlabeled set.
    seen = []
    for rank in range(2):
        shard = DataModule(config, rank=rank, world_size=2)
        stream = shard.unlabeled_stream(start_step=0, start_position=0, pin_memory=False)
        assert stream is not None and shard.unlabeled_batch_size == 8
        seen.append({int(i) for _ in range(11) for i in next(stream).indices})
    assert len(seen[0]) == len(seen[1]) == 88 and not seen[0] & seen[1]


@pytest.mark.parametrize("mode", ["two_step", "two_step_grad", "joint"])
def test_ubn_run_attaches_unlabeled_batches_and_counts_their_flops(tiny_config, mode: str) -> None:
    trainer = Trainer(tiny_config(plugins={"ubn": {"mode": mode, "unlabeled_batch_size": 24}}))
    result = trainer.fit()
    state = result.state
    assert state is not None and len(result.losses) == 4
    assert all(torch.isfinite(torch.tensor(result.losses)))
    per_sample = state.task.forward_flops_per_sample(state.flops, 16)
    expected = 4 * per_sample * ((16 + 24) if mode != "joint" else 3 * 24)
    assert state.flops.overhead["ubn"] == pytest.approx(expected)
    assert state.flops.train == pytest.approx(4 * 3 * 16 * per_sample)
    assert state.scratch["engine/unlabeled_loaded"] == 4 * 24
    # hasten estimate's planning answers the same per-step overhead.
    ubn = trainer.plugins.get("ubn")
    assert ubn.hasten_plan_step(state=state, step=9, batch_size=16) == {"ubn": pytest.approx(expected / 4)}


def test_running_statistics_come_from_the_combined_batch(spiral_config, tmp_path: Path) -> None:
    """After UBN training, the running mean of the first BN layer matches the combined data's, not the labeled's."""
    result = train(spiral_config(run={"max_steps": 60}, plugins={"ubn": {}}))
    bn_result = train(spiral_config(run={"max_steps": 60, "run_dir": str(tmp_path / "bn")}))
    for res, which in ((result, "combined"), (bn_result, "labeled")):
        model = res.state.model
        data = res.state.data
        x = torch.cat([data.train.images, data.unlabeled.images]) if which == "combined" else data.train.images
        with torch.no_grad():
            features = model.body[0](x)
        # Running statistics (momentum 0.1, 60 steps of fixed inputs at a decaying LR) track the batch mean.
        error = (model.body[1].running_mean - features.mean(0)).abs().max()
        assert float(error) < 0.05 * float(features.std(0).mean()) + 1e-3, which


def test_errors_name_the_key(spiral_config, tiny_config) -> None:
    with pytest.raises(UserError, match=r"plugins.ubn: needs an unlabeled stream: set data.unlabeled"):
        Trainer(tiny_config(data={"labeled_fraction": None}, plugins={"ubn": {}}))
    with pytest.raises(UserError, match=r"plugins.ubn: model 'mlp' has no BatchNorm layer"):
        Trainer(spiral_config(model={"name": "mlp", "options": {"batchnorm": False}}, plugins={"ubn": {}}))
    with pytest.raises(UserError, match=r"plugins.ubn.layers: \['head\*'\] match no BatchNorm layer"):
        Trainer(spiral_config(plugins={"ubn": {"layers": ["head*"]}}))
    with pytest.raises(UserError, match=r"plugins.ubn.mode"):
        Trainer(spiral_config(plugins={"ubn": {"mode": "both"}}))
    with pytest.raises(UserError, match=r"plugins.ubn.unlabeled_batch_size: 32 differs from data.unlabeled.batch_size"):
        Trainer(spiral_config(plugins={"ubn": {"unlabeled_batch_size": 32}}))
    with pytest.raises(UserError, match=r"leaves no unlabeled samples"):
        Trainer(tiny_config(data={"labeled_fraction": 1.0}, plugins={"ubn": {}}))


def trained_for_report(config, tmp_path: Path) -> tuple[argparse.ArgumentParser, Path, Path]:
    """Train ``config``, write it to a YAML file; the ``ubn-report`` parser, that file and the checkpoint."""
    import yaml

    result = train(config)
    checkpoint = next((Path(result.run_dir) / "checkpoints").iterdir())
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    parser = argparse.ArgumentParser()
    add_report_command(parser.add_subparsers())
    return parser, config_file, checkpoint


def test_ubn_report_prints_table_2_1(spiral_config, tmp_path: Path, capsys) -> None:
    config = spiral_config(run={"max_steps": 20, "checkpoint_every": 20}, plugins={"ubn": {}})
    parser, config_file, checkpoint = trained_for_report(config, tmp_path)
    args = parser.parse_args(["ubn-report", str(config_file), "--checkpoint", str(checkpoint), "--json"])
    assert args.handler(args) == 0
    import json

    rows = json.loads(capsys.readouterr().out)
    assert [r["layer"] for r in rows] == ["body.1", "body.4", "body.7", "body.10"]
    for row in rows:
        assert row["features"] == 64 and 0.0 <= row["ks_fraction"] <= 1.0 and row["wasserstein"] > 0
        assert -1.0 <= row["pearson"] <= 1.0 and row["kl"] >= 0 and row["reverse_kl"] >= 0


@pytest.mark.parametrize("mode", ["two_step", "two_step_grad", "joint"])
def test_ubn_trains_the_depth_task(tmp_path: Path, mode: str) -> None:
    """Dense regression: labeled frames keep their depth maps, unlabeled frames only add BN statistics."""
    from hasten.config import validate_config

    config = validate_config({
        "run": {"name": "d", "seed": 0, "max_steps": 20, "log_every": 10, "run_dir": str(tmp_path / "run"),
                "progress": False},
        "data": {"dataset": "procedural_depth", "resolution": 32, "batch_size": 8, "labeled_fraction": 0.25,
                 "unlabeled": {"batch_size": 16}, "options": {"train_size": 128, "val_size": 32}},
        "model": {"name": "dispnet", "options": {"widths": [8, 16, 32, 64]}},
        "task": {"name": "depth"},
        "optim": {"name": "adamw", "lr": 0.01, "weight_decay": 0.0},
        "eval": {"batch_size": 32, "every_steps": 1000},
        "tracking": {"enabled": False},
        "plugins": {"ubn": {"mode": mode}},
    })
    result = train(config)
    assert result.losses[-1] < 0.8 * result.losses[0]
    assert 0.0 <= result.metrics["val/delta1"] <= 1.0
    state = result.state
    per_sample = state.task.forward_flops_per_sample(state.flops, 32)
    factor = (8 + 16) if mode != "joint" else 3 * 16
    assert state.flops.overhead["ubn"] == pytest.approx(20 * per_sample * factor)


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"plugins": {"ubn": {"mode": "both"}}}, ["plugins.ubn.mode", "two_step", "joint"]),
        ({"plugins": {"ubn": {"unlabeled_batch_size": 0}}}, ["plugins.ubn.unlabeled_batch_size", "greater than 0"]),
        ({"data": {"unlabeled": {"batch_size": 0}}, "plugins": {"ubn": {}}}, ["data.unlabeled.batch_size"]),
        ({"model": {"name": "mlp", "options": {"batchnorm": False}}, "plugins": {"ubn": {}}},
         ["plugins.ubn", "has no BatchNorm layer"]),
        ({"data": {"unlabeled": None}, "plugins": {"ubn": {}}}, ["plugins.ubn", "needs an unlabeled stream"]),
    ],
    ids=["unknown-mode", "unlabeled-batch-0", "data-unlabeled-batch-0", "no-batchnorm", "no-unlabeled-data"],
)
def test_bad_settings_exit_2_naming_the_key(tmp_path: Path, capsys, sections: dict, expected: list[str]) -> None:
    """`hasten train` with a bad UBN setting: exit 2, one message naming the key, no traceback, nothing trained."""
    import yaml
    from conftest import spiral_config_dict

    from hasten.cli import main

    config = spiral_config_dict(tmp_path, run={"max_steps": 2})
    for section, values in sections.items():
        for key, value in values.items():
            if value is None:
                config[section].pop(key, None)
            else:
                config.setdefault(section, {})[key] = value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, (text, err)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_ubn_report_mc_bn_on_a_trained_cnn(tiny_config, tmp_path: Path, capsys) -> None:
    """`ubn-report --mc-bn T` on a small ResNet: distances and MC-BN figures from the checkpoint."""
    import json

    config = tiny_config(run={"checkpoint_every": 4}, plugins={"ubn": {}})
    parser, config_file, checkpoint = trained_for_report(config, tmp_path)
    args = parser.parse_args(["ubn-report", str(config_file), "--checkpoint", str(checkpoint), "--mc-bn", "4",
                              "--max-images", "64", "--json"])
    assert args.handler(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["distances"]) >= 2 and all(r["features"] > 0 for r in out["distances"])
    mc = out["mc_bn"]
    assert mc["samples"] == 64 and mc["passes"] == 4 and mc["wrong"] == round(64 * (1 - mc["accuracy"]))
    assert 0.0 <= mc["auroc_wrong"] <= 1.0 and mc["std_wrong"] >= 0 and mc["std_correct"] >= 0
    bad = parser.parse_args(["ubn-report", str(config_file), "--checkpoint", str(checkpoint), "--mc-bn", "1"])
    with pytest.raises(UserError, match=r"--mc-bn: 1 passes; a spread needs at least 2"):
        bad.handler(bad)
