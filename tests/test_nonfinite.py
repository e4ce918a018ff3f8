"""Non-finite weights, buffers and optimizer state never reach a checkpoint, an evaluation or a
"finished" run, and a resume refuses a checkpoint that holds them (docs/robustness.md, Failures)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import tiny_config_dict
from pydantic import BaseModel, ConfigDict

import hasten
from hasten.checkpoint import load_checkpoint, nonfinite_tensors
from hasten.cli import main
from hasten.config import validate_config
from hasten.engine import train
from hasten.errors import TrainingStopped
from hasten.plugins import register_plugin, unregister_plugin

BN_VAR = "stem.1.running_var"  # small_resnet's stem BatchNorm


def tiny(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    config = tiny_config_dict(tmp_path, **sections)
    config["run"]["threads"] = 1
    return config


def write_yaml(path: Path, config: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


def all_tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor anywhere in a loaded checkpoint (walked here, independently of hasten's helpers)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in all_tensors(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in all_tensors(v)]
    return []


def count_nonfinite(path: Path) -> int:
    return sum(int(not torch.isfinite(t).all()) for t in all_tensors(load_checkpoint(path))
               if t.is_floating_point() and t.numel())


class InfRunningVar(hasten.Plugin):
    """Writes inf into one BatchNorm running_var during step ``at``; the training loss stays finite
    (training-mode BatchNorm normalises with the batch's statistics)."""

    name = "inf_running_var"

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        at: int = 2

    @hasten.hookimpl
    def hasten_step_end(self, state: hasten.State, output: hasten.StepOutput) -> None:
        if state.step == self.settings.at:
            state.model.get_buffer(BN_VAR).fill_(float("inf"))


@pytest.fixture
def inf_plugin():
    register_plugin(InfRunningVar)
    yield
    unregister_plugin(InfRunningVar.name)


def test_nonfinite_tensors_flags_nan_and_inf_not_large_values() -> None:
    named = [
        ("big", torch.full((4,), 3e38)),  # a 2-norm would overflow to inf; the max-norm does not
        ("nan", torch.tensor([1.0, float("nan")])),
        ("half", torch.tensor([1.0], dtype=torch.bfloat16)),
        ("neg_inf", torch.tensor([-float("inf")], dtype=torch.float64)),
        ("scalar", torch.tensor(2.0)),
    ]
    assert nonfinite_tensors(named) == ["nan", "neg_inf"]
    assert nonfinite_tensors([]) == []


# Before the state check, lr 1e3 and 1e4 named a last good checkpoint holding 9 and 3 infinite BatchNorm
# running_var tensors (the loss turned NaN one step after they overflowed).
@pytest.mark.parametrize("lr", [1e3, 1e4, 1e6])
def test_diverging_run_names_a_checkpoint_whose_every_tensor_is_finite(tmp_path: Path, lr: float, capsys) -> None:
    config = tiny(tmp_path, run={"max_steps": 12, "log_every": 4, "checkpoint_every": 1}, optim={"lr": lr})
    code = main(["train", write_yaml(tmp_path / "c.yaml", config)])
    err = capsys.readouterr().err
    assert code == 1, err
    named = re.search(r"last good checkpoint: (\S+?);", err)
    assert named is not None, err
    assert f"try a lower optim.lr (now {lr:g})" in err
    written = sorted((tmp_path / "run" / "checkpoints").glob("step-*.pt"))
    if named.group(1) == "none":
        assert "none written" in err and not written
    else:
        assert Path(named.group(1)) == written[-1]
    # Every checkpoint the run left, the named one included, is finite in every tensor.
    assert [count_nonfinite(path) for path in written] == [0] * len(written)


def test_infinite_buffer_with_finite_loss_stops_before_the_checkpoint(tmp_path: Path, inf_plugin, capsys) -> None:
    config = tiny(tmp_path, run={"max_steps": 8, "log_every": 1, "checkpoint_every": 2},
                  plugins={"inf_running_var": {"at": 2}})  # during the 3rd step: the step-4 checkpoint is refused
    code = main(["train", write_yaml(tmp_path / "c.yaml", config)])
    err = capsys.readouterr().err
    good = tmp_path / "run" / "checkpoints" / "step-000000002.pt"
    assert code == 1
    assert "non-finite loss" not in err  # the loss stayed finite: the state check found it
    assert f"non-finite model state at step 4: NaN or inf in {BN_VAR} (finite at the previous check, step 2)" in err
    assert f"last good checkpoint: {good}" in err
    assert sorted(p.name for p in good.parent.glob("step-*.pt")) == [good.name]
    assert count_nonfinite(good) == 0


def test_infinite_final_buffers_fail_the_run_and_its_mlflow_run(
    tmp_path: Path, inf_plugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # the local store's artifacts land here
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    config = validate_config(tiny(
        tmp_path, run={"max_steps": 6, "log_every": 2}, eval={"every_steps": 100},
        plugins={"inf_running_var": {"at": 4}},
        tracking={"enabled": True, "uri": uri, "experiment": "nonfinite", "artifacts": False},
    ))
    with pytest.raises(TrainingStopped, match=rf"non-finite model state at step 6: NaN or inf in {BN_VAR}") as stop:
        train(config)
    assert stop.value.step == 6 and stop.value.checkpoint is None
    assert "last good checkpoint: none written" in str(stop.value)
    client = mlflow.tracking.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("nonfinite").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["hasten.stop_reason"] == str(stop.value)
    assert "val/loss" not in run.data.metrics  # the final evaluation was not made from the infinite statistics


def corrupt_checkpoint(tmp_path: Path, where: str) -> tuple[Path, str, str]:
    """A finished 4-step run whose newest checkpoint then gets an infinite tensor; (file, config, name)."""
    config = tiny(tmp_path, run={"max_steps": 4, "log_every": 2, "checkpoint_every": 2})
    train(validate_config(config))
    path = tmp_path / "run" / "checkpoints" / "step-000000004.pt"
    blob = load_checkpoint(path)
    if where == "model":
        blob["model"][BN_VAR][0] = float("inf")
        name = BN_VAR
    else:
        blob["optimizer"]["state"][0]["momentum_buffer"][0] = float("nan")
        name = "optimizer.state[stem.0.weight].momentum_buffer"
    torch.save(blob, path)
    config["run"]["max_steps"] = 6
    return path, write_yaml(tmp_path / "c.yaml", config), name


@pytest.mark.parametrize("where", ["model", "optimizer"])
def test_resume_from_a_nonfinite_checkpoint_refuses_naming_file_and_tensor(tmp_path: Path, where: str, capsys) -> None:
    path, config_file, name = corrupt_checkpoint(tmp_path, where)
    capsys.readouterr()
    code = main(["train", config_file, "--resume", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"--resume: {path} holds non-finite values (NaN or inf) in {name};" in err
    assert "--resume-allow-nonfinite" in err and "Traceback" not in err
    assert sorted(p.name for p in path.parent.glob("step-*.pt")) == ["step-000000002.pt", path.name]  # untouched


def test_resume_allow_nonfinite_loads_it_and_the_next_check_stops(tmp_path: Path, capsys) -> None:
    path, config_file, _name = corrupt_checkpoint(tmp_path, "model")
    capsys.readouterr()
    assert main(["train", config_file, "--resume-allow-nonfinite"]) == 2  # only together with --resume
    assert "--resume-allow-nonfinite: only with --resume" in capsys.readouterr().err
    code = main(["train", config_file, "--resume", str(tmp_path / "run"), "--resume-allow-nonfinite"])
    err = capsys.readouterr().err
    assert code == 1  # loaded (not refused with 2), trained steps 4 and 5, and stopped at the end
    assert "loading it anyway" in err and f"resuming from {path} (step 4)" in err
    assert f"non-finite model state at step 6: NaN or inf in {BN_VAR} (first check of this run)" in err
    assert "last good checkpoint: none written" in err  # the loaded file is not counted as good
