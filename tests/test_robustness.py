"""Issue 19: nothing a user wrote or trained is lost; bad input fails early and clearly.

One test per data-loss case (checking the files on disk afterwards) and per
class of bad input; tests/catalogue/ holds the catalogue of >= 40 bad inputs.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest
import torch
from conftest import tiny_config_dict

import hasten
from hasten.builtins.tracking_store import prepare_store, store_problem
from hasten.checkpoint import DAMAGED_SUFFIX
from hasten.cli import main
from hasten.config import validate_config
from hasten.engine import train
from hasten.plugins import register_plugin, unregister_plugin


def tiny(tmp_path: Path, **sections) -> dict:
    config = tiny_config_dict(tmp_path, **sections)
    config["run"]["threads"] = 1
    return config


def checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


# ---------------------------------------------------------------- 1. damaged checkpoints
def test_a_run_without_checkpoint_every_leaves_its_trained_state(tmp_path):
    """The default (checkpoint_every null): no periodic checkpoint, one at the end with the final weights."""
    result = train(validate_config(tiny(tmp_path, run={"max_steps": 5})))
    run_dir = tmp_path / "run"
    assert checkpoints(run_dir) == ["step-000000005.pt"]
    saved = torch.load(run_dir / "checkpoints" / "step-000000005.pt", weights_only=True)
    assert saved["step"] == 5
    final = result.state.model.state_dict()
    assert all(torch.equal(saved["model"][k], final[k].cpu()) for k in final)


def test_resume_whose_only_checkpoint_is_damaged_stops_and_keeps_the_file(tmp_path, capsys):
    config = tiny(tmp_path, run={"max_steps": 4, "checkpoint_every": 2, "keep_checkpoints": 1})
    train(validate_config(config))
    run_dir = tmp_path / "run"
    only = run_dir / "checkpoints" / "step-000000004.pt"
    assert checkpoints(run_dir) == ["step-000000004.pt"]
    only.write_bytes(only.read_bytes()[:1000])  # truncated (a full disk)
    damaged = only.read_bytes()
    config["run"]["max_steps"] = 8
    path = tmp_path / "c.yaml"
    import yaml

    path.write_text(yaml.safe_dump(config))
    code = main(["train", str(path), "--resume", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2 and str(only) in err and "nothing was changed" in err and "Traceback" not in err
    assert checkpoints(run_dir) == ["step-000000004.pt"]
    assert only.read_bytes() == damaged  # not overwritten, not deleted


def test_damaged_newest_checkpoint_is_kept_aside_and_the_older_one_resumed(tmp_path, capsys):
    config = tiny(tmp_path, run={"max_steps": 4, "checkpoint_every": 2, "keep_checkpoints": 2})
    train(validate_config(config))
    run_dir = tmp_path / "run"
    newest = run_dir / "checkpoints" / "step-000000004.pt"
    newest.write_bytes(b"torn")
    config["run"]["max_steps"] = 6
    result = train(validate_config(config), resume=True)
    assert result.steps == 6
    kept = newest.with_name(newest.name + DAMAGED_SUFFIX)
    assert kept.read_bytes() == b"torn"  # the resumed run wrote step 4 again, beside the evidence
    assert "step-000000004.pt.damaged" in checkpoints(run_dir)
    assert "kept as" in capsys.readouterr().err


# ---------------------------------------------------------------- 2. mistyped --resume
def test_resume_of_a_missing_folder_refuses_naming_the_nearest_runs(tmp_path, capsys):
    runs = tmp_path / "runs"
    existing = runs / "t-20261201-101500"
    train(validate_config(tiny(tmp_path, run={"max_steps": 2, "checkpoint_every": 2, "run_dir": str(existing)})))
    config = tiny(tmp_path, run={"max_steps": 4, "run_dir": None, "output_dir": str(runs)})
    typo = runs / "t-20261201-101550"
    with pytest.raises(hasten.UserError) as info:
        train(validate_config(config), resume=str(typo))
    assert str(typo) in str(info.value) and "does not exist" in str(info.value) and str(existing) in str(info.value)
    assert not typo.exists()  # no new run folder was made
    assert sorted(p.name for p in runs.iterdir()) == [existing.name]


# ---------------------------------------------------------------- 3. the SQLite store
def test_default_store_is_created_atomically_before_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".mlruns.db.creating-12345").write_bytes(b"half of a killed creation")
    seen_partial: list[bool] = []
    done = threading.Event()

    def watch() -> None:  # the target never exists while the temporary file is being filled
        while not done.is_set():
            if (tmp_path / "mlruns.db").exists():
                seen_partial.append(store_problem(tmp_path / "mlruns.db") is not None)
                return

    watcher = threading.Thread(target=watch)
    watcher.start()
    prepare_store("sqlite:///mlruns.db")
    done.set()
    watcher.join()
    assert seen_partial in ([], [False])
    assert store_problem(tmp_path / "mlruns.db") is None
    assert not list(tmp_path.glob(".mlruns.db.creating-*"))  # the killed creation's leftover is gone
    tables = {r[0] for r in sqlite3.connect(tmp_path / "mlruns.db").execute("SELECT name FROM sqlite_master")}
    assert {"experiments", "runs", "metrics", "alembic_version"} <= tables


def test_broken_store_is_named_with_its_recovery_and_left_as_it_was(tmp_path, capsys):
    store = tmp_path / "mlruns.db"
    connection = sqlite3.connect(store)
    connection.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY)")  # creation cut short
    connection.commit()
    connection.close()
    before = store.read_bytes()
    config = tiny(tmp_path, tracking={"enabled": True, "uri": f"sqlite:///{store}"})
    with pytest.raises(hasten.UserError) as info:
        train(validate_config(config))
    message = str(info.value)
    assert str(store) in message and "broken" in message and "hasten sync RUN_DIR --uri" in message
    assert "unreachable" not in message
    assert not (tmp_path / "run").exists()  # refused before the run folder, data or model
    assert store.read_bytes() == before
    # `hasten sync` tells the same, not "sending failed"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "tracking-fallback.jsonl").write_text(json.dumps({"op": "open", "run_id": None}) + "\n")
    code = main(["sync", str(tmp_path / "old"), "--uri", f"sqlite:///{store}"])
    err = capsys.readouterr().err
    assert code == 2 and "broken" in err and str(store) in err
    assert (tmp_path / "old" / "tracking-fallback.jsonl").is_file()


# ---------------------------------------------------------------- 4. killed before the first checkpoint
class CrashAtStep3(hasten.Plugin):
    name = "crash3"

    @hasten.hookimpl
    def hasten_step_start(self, state):
        if state.step == 3:
            raise RuntimeError("killed")


def test_resume_before_any_checkpoint_continues_the_recorded_mlflow_run(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    tracking = {"enabled": True, "uri": uri, "experiment": "tests", "asynchronous": False, "artifacts": False}
    register_plugin(CrashAtStep3)
    try:
        with pytest.raises(RuntimeError, match="killed"):
            train(validate_config(tiny(tmp_path, run={"max_steps": 5, "log_every": 1}, tracking=tracking,
                                       plugins={"crash3": {}})))
    finally:
        unregister_plugin(CrashAtStep3.name)
    run_dir = tmp_path / "run"
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    assert not (run_dir / "checkpoints").exists()
    result = train(validate_config(tiny(tmp_path, run={"max_steps": 5, "log_every": 1}, tracking=tracking)),
                   resume=str(run_dir))
    assert result.steps == 5
    assert result.state.scratch["tracking"]["run_id"] == run_id
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    assert client.get_run(run_id).info.status == "FINISHED"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "train/loss" in row["metrics"]] == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- 5. interrupted checkpoint writes
def test_temporary_files_of_interrupted_writes_are_removed_on_resume_and_on_a_fresh_start(tmp_path, capsys):
    config = tiny(tmp_path, run={"max_steps": 2, "checkpoint_every": 2})
    train(validate_config(config))
    folder = tmp_path / "run" / "checkpoints"
    leftover = folder / ".step-000000004.pt.tmp-4242"
    leftover.write_bytes(b"half a checkpoint")
    config["run"]["max_steps"] = 4
    train(validate_config(config), resume=True)
    assert checkpoints(tmp_path / "run") == ["step-000000002.pt", "step-000000004.pt"]
    assert str(leftover) in capsys.readouterr().err
    # a run killed while writing its very first checkpoint: a fresh start may use the folder, and cleans it
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)
    (other / "checkpoints" / ".step-000000002.pt.tmp-77").write_bytes(b"x")
    train(validate_config(tiny(tmp_path, run={"max_steps": 2, "checkpoint_every": 2, "run_dir": str(other)})))
    assert checkpoints(other) == ["step-000000002.pt"]


# ---------------------------------------------------------------- 6-11: bad input, early
def test_preflight_runs_before_any_data_is_built(tmp_path):
    # The data path does not exist either: the metric is refused first, so nothing was read.
    config = tiny(tmp_path, data={"dataset": "imagefolder", "path": str(tmp_path / "nowhere"), "options": {}},
                  eval={"metric": "val/accuracy"})
    with pytest.raises(hasten.UserError, match=r"^eval\.metric: 'val/accuracy'.*allowed: val/loss, val/acc1"):
        train(validate_config(config))
    config = tiny(tmp_path, model={"name": "vit_tiny", "options": {}}, data={"resolution": 30,
                  "dataset": "imagefolder", "path": str(tmp_path / "nowhere"), "options": {}})
    with pytest.raises(hasten.UserError, match=r"^data\.resolution: resolution 30 must be a multiple of 4"):
        train(validate_config(config))
    config = tiny(tmp_path, model={"name": "resnet5"},
                  data={"dataset": "imagefolder", "path": str(tmp_path / "nowhere"), "options": {}})
    with pytest.raises(hasten.UserError, match=r"^model\.name: unknown model 'resnet5'"):
        train(validate_config(config))
    assert not (tmp_path / "run").exists()


def test_error_in_a_dataloader_worker_is_one_message_naming_the_file(tmp_path, capsys):
    from torchvision.io import write_png

    for split in ("train", "val"):
        for cls in ("a", "b"):
            for i in range(4):
                (tmp_path / "img" / split / cls).mkdir(parents=True, exist_ok=True)
                write_png(torch.full((3, 8, 8), i, dtype=torch.uint8), str(tmp_path / "img" / split / cls / f"{i}.png"))
    bad = tmp_path / "img" / "train" / "b" / "2.png"
    bad.write_bytes(b"not a png")
    import yaml

    config = tiny(tmp_path, data={"dataset": "imagefolder", "path": str(tmp_path / "img"), "resolution": 8,
                                  "batch_size": 8, "num_workers": 2, "options": {}}, run={"max_steps": 3})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    code = main(["train", str(tmp_path / "c.yaml")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("error:") == 1 and str(bad) in err
    assert "Traceback" not in err and "DataLoader worker process" not in err
