"""`hasten sweep`: frontiers over budgets and seeds, resumable; bad command lines refused with exit 2."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from hasten.cli import main
from hasten.commands import sweep
from hasten.config import validate_config
from hasten.testing import tiny_config_dict

REPO = Path(__file__).resolve().parents[1]


def write_config(tmp_path: Path, name: str = "tiny", steps: int = 8, **sections: Any) -> Path:
    data = tiny_config_dict(tmp_path, **sections)
    data["run"].pop("run_dir")  # the sweep gives every run its own folder
    data["run"]["max_steps"] = steps
    data["eval"]["train_subset"] = 64
    data["tracking"] = {"enabled": True, "uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifacts": False}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def finished_runs(tmp_path: Path) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("hasten")
    return client.search_runs([experiment.experiment_id], filter_string="tags.`hasten.run_type` = 'sweep'")


def test_sweep_trains_each_budget_and_seed_once_and_reports_the_frontier(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path)
    out = tmp_path / "sweep"
    args = ["sweep", str(config), "--budgets", "0.5", "1", "--seeds", "2", "--out", str(out)]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert first.count(": training") == 4
    records = sweep.read_records(out)
    assert sorted((r.budget, r.seed) for r in records) == [(0.5, 0), (0.5, 1), (1.0, 0), (1.0, 1)]
    by_budget = {r.budget: r.steps for r in records}
    assert by_budget == {0.5: 4, 1.0: 8}  # each budget a fraction of the length, fully annealed at its own
    assert all(r.train_flops > 0 and r.trainset_acc1 is not None for r in records)
    # each record names the checkout's commit: 12 hex digits, "+dirty" with local changes (None without git)
    commit = sweep.code_commit()
    assert commit is None or re.fullmatch(r"[0-9a-f]{12}(\+dirty)?", commit)
    assert {r.code_commit for r in records} == {commit}
    half, full = (sorted(r.train_flops for r in records if r.budget == b)[0] for b in (0.5, 1.0))
    assert full == pytest.approx(2 * half, rel=1e-6)  # training FLOPs, evaluation excluded
    # every run is an MLflow run tagged with the config's hash, its budget and seed; plus the sweep's own run
    runs = finished_runs(tmp_path)
    trained = [r for r in runs if "hasten.sweep.seed" in r.data.tags]
    assert len(trained) == 4 and all(r.info.status == "FINISHED" for r in trained)
    assert {r.data.tags["hasten.sweep.config_hash"] for r in trained} == {records[0].config_hash}
    summary = [r for r in runs if "hasten.sweep.seed" not in r.data.tags]
    assert len(summary) == 1
    report = json.loads((out / "frontier.json").read_text())
    assert [row["budget"] for row in report["rows"]] == [0.5, 1.0]
    assert all(len(row["seeds"]) == 2 for row in report["rows"])
    assert (out / "frontier.png").stat().st_size > 1000
    assert "| tiny (baseline) | 0.5 | 4 | 2 |" in (out / "frontier.md").read_text()

    # started again: nothing is trained twice
    assert main(args) == 0
    again = capsys.readouterr().out
    assert again.count(": training") == 0 and again.count("done already, skipped") == 4
    # the records lost: the finished MLflow runs are found by their tags instead
    for path in (out / "records").glob("*/*.json"):
        path.unlink()
    assert main(args) == 0
    assert capsys.readouterr().out.count(": training") == 0
    assert len(sweep.read_records(out)) == 4


def test_a_killed_sweep_continues_without_retraining_finished_runs(tmp_path: Path) -> None:
    config = write_config(tmp_path, steps=200)
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "hasten", "sweep", str(config), "--budgets", "0.25", "0.5", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "core") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    # killed as soon as the second run (budget 0.5, 100 steps) has made its folder: inside it, whatever the speed
    while not list((out / "runs").glob("*-b0.5-s0/" + sweep.SWEEP_RUN_FILE)) and time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)
    done_before = {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*/*.json")}
    assert 0 < len(done_before) < 3

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert finished.stdout.count("done already, skipped") == len(done_before)
    assert finished.stdout.count(": training") == 3 - len(done_before)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*/*.json")}
    assert len(after) == 3
    assert all(after[name] == mtime for name, mtime in done_before.items())  # finished records untouched
    trained = [r for r in finished_runs(tmp_path) if "hasten.sweep.seed" in r.data.tags and r.info.status == "FINISHED"]
    assert sorted(r.data.tags["hasten.sweep.budget"] for r in trained) == ["0.25", "0.5", "1"]
    # the killed run's folder was kept aside, not deleted
    assert list((out / "runs").glob("*.unfinished-*"))


def test_two_sweeps_into_one_folder_share_the_runs_and_train_each_once(tmp_path: Path) -> None:
    """Two live `hasten sweep` processes on one --out: each run is claimed while it trains, so the other
    passes over it; together they train every run once."""
    config = write_config(tmp_path, steps=60)
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "hasten", "sweep", str(config), "--budgets", "0.25", "0.5", "0.75", "1",
               "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "core") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(2)]
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], "\n".join(outputs)
    assert sum(text.count(": training") for text in outputs) == 4, "\n".join(outputs)
    assert len(list((out / "records").glob("*/*.json"))) == 4
    trained = [r for r in finished_runs(tmp_path) if "hasten.sweep.seed" in r.data.tags and r.info.status == "FINISHED"]
    assert sorted(r.data.tags["hasten.sweep.budget"] for r in trained) == ["0.25", "0.5", "0.75", "1"]


def test_a_run_another_process_trains_is_passed_over_then_trained_once_free(tmp_path: Path) -> None:
    config = write_config(tmp_path, steps=8)
    entries = sweep.prepare([str(config)], [], [1.0], 1, None)
    out = tmp_path / "sweep"
    items = [(entries[0], 0.5, 0), (entries[0], 1.0, 0)]
    held = sweep.run_claim(out, entries[0], 0.5, 0).acquire()  # as another live process would
    try:
        assert sweep.in_training(out, entries[0], 0.5, 0) == f"pid {os.getpid()} on {os.uname().nodename}"
        lines: list[str] = []
        records = sweep.run_plan(items, out, log=lines.append)
        assert [r.budget for r in records] == [1.0]
        assert any("budget 0.5, seed 0: being trained by another process (pid" in line for line in lines)
        assert not sweep.record_path(out, entries[0].label, entries[0].config_hash, 0.5, 0).is_file()
    finally:
        held.release()
    assert sweep.in_training(out, entries[0], 0.5, 0) is None
    lines = []
    assert [r.budget for r in sweep.run_plan(items, out, log=lines.append)] == [0.5, 1.0]
    assert sum(": training" in line for line in lines) == 1


def test_a_run_killed_after_a_checkpoint_continues_from_it_and_ends_as_if_never_killed(tmp_path: Path) -> None:
    config = write_config(tmp_path, steps=200, run={"checkpoint_every": 20, "threads": 1})
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "hasten", "sweep", str(config), "--budgets", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "core") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    while not list(out.glob("runs/*/checkpoints/step-*.pt")) and time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)
    assert not list((out / "records").glob("*/*.json"))  # killed before the run finished

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "continuing from its checkpoint" in finished.stdout and ": training" not in finished.stdout
    assert not list((out / "runs").glob("*.unfinished-*"))  # the same folder, continued
    (resumed,) = sweep.read_records(out)

    # the same sweep, never killed (its own folder and MLflow store)
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    reference_config = write_config(reference_dir, steps=200, run={"checkpoint_every": 20, "threads": 1})
    assert main(["sweep", str(reference_config), "--budgets", "1", "--out", str(reference_dir / "sweep")]) == 0
    (reference,) = sweep.read_records(reference_dir / "sweep")
    assert resumed.steps == reference.steps == 200
    assert resumed.value == reference.value  # exact resume: the same final metric
    assert resumed.train_flops == pytest.approx(reference.train_flops, rel=1e-9)
    assert resumed.images_loaded == reference.images_loaded
    assert resumed.wall_time > 0
    # one MLflow run for the (config, budget, seed): the killed process's run, continued and finished
    trained = [r for r in finished_runs(tmp_path) if "hasten.sweep.seed" in r.data.tags]
    assert [r.info.status for r in trained] == ["FINISHED"]
    assert trained[0].info.run_id == resumed.run_id


def test_a_folder_of_another_run_is_set_aside_not_continued(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "step-000000005.pt").write_bytes(b"x")
    assert not sweep.continues(run_dir, "abc", 0)  # no marker: whose checkpoints these are is unknown
    (run_dir / sweep.SWEEP_RUN_FILE).write_text(json.dumps({"run_hash": "abc", "seed": 1}))
    assert not sweep.continues(run_dir, "abc", 0)  # another seed
    assert not sweep.continues(run_dir, "abd", 1)  # another recipe
    assert sweep.continues(run_dir, "abc", 1)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--budgets", "0", "1"], "--budgets: 0 is outside (0, 1]"),
        (["--budgets", "1.5"], "--budgets: 1.5 is outside (0, 1]"),
        (["--budgets", "0.5", "0.5"], "--budgets: 0.5 given more than once"),
        (["--seeds", "0"], "--seeds: 0"),
    ],
)
def test_bad_budgets_and_seeds_exit_2_naming_the_argument(tmp_path: Path, capsys, extra: list[str], named: str) -> None:
    config = write_config(tmp_path)
    assert main(["sweep", str(config), *extra, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not (tmp_path / "s" / "records").exists()  # refused before any work


def test_configs_measuring_different_metrics_are_refused(tmp_path: Path, capsys) -> None:
    first = write_config(tmp_path, "first")
    second = write_config(tmp_path, "second", eval={"metric": "val/loss"})
    assert main(["sweep", str(first), str(second), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "CONFIG: the configs measure different metrics" in err and "val/loss" in err


def test_missing_config_and_no_length(tmp_path: Path, capsys) -> None:
    assert main(["sweep", str(tmp_path / "nope.yaml")]) == 2
    assert "CONFIG: config file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # no config at all: argparse names the missing argument
        main(["sweep"])
    assert stop.value.code == 2
    assert "config" in capsys.readouterr().err


def test_recipe_hash_ignores_seed_and_names_but_not_the_recipe(tmp_path: Path) -> None:
    base = tiny_config_dict(tmp_path)
    h = sweep.recipe_hash(validate_config(base))
    renamed = tiny_config_dict(tmp_path, run={"seed": 3, "name": "other", "run_dir": str(tmp_path / "x")})
    assert sweep.recipe_hash(validate_config(renamed)) == h
    faster = tiny_config_dict(tmp_path, run={"channels_last": True, "threads": 1, "checkpoint_every": 3})
    assert sweep.recipe_hash(validate_config(faster)) == h
    assert sweep.recipe_hash(validate_config(tiny_config_dict(tmp_path, optim={"lr": 0.06}))) != h
    assert sweep.recipe_hash(validate_config(tiny_config_dict(tmp_path, run={"max_steps": 7}))) != h


def test_compare_reports_the_speedup_against_a_sweep_frontier(tmp_path: Path, capsys) -> None:
    from hasten.frontier import speedup_against

    config = write_config(tmp_path, steps=4)
    # a synthetic frontier: 0.0 at 1 FLOP... 1.0 at 1e15 (log-linear), so any run of this test lies inside it
    frontier = {"metric": "val/acc1", "baseline": "synthetic", "frontier": {"synthetic": [[1.0, 0.0], [1e15, 1.0]]}}
    (tmp_path / "frontier.json").write_text(json.dumps(frontier))
    assert main(["compare", str(config), "--frontier", str(tmp_path), "--plot", str(tmp_path / "c.png"),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    run = report["runs"][0]
    item = report["frontier"]["runs"][0]
    expected = speedup_against([(1.0, 0.0), (1e15, 1.0)], run["total_flops"], run["final"])
    assert item["status"] == "inside"
    assert item["speedup"] == pytest.approx(expected.speedup)
    assert item["speedup"] == pytest.approx(10 ** (15 * run["final"]) / run["total_flops"], rel=1e-6)
    # the table: its own named column beside the compute and wall-time speed-ups, defined under the table
    from hasten.commands.compare import format_table

    table = format_table(report)
    header = next(line for line in table.splitlines() if line.startswith("run"))
    assert header.split("  ")[-1].strip() == "frontier speed-up" and "compute speed-up" in header
    assert f"{expected.speedup:.2f}x" in table.splitlines()[3]
    assert "frontier speed-up = the multiply-adds the synthetic frontier of" in table
    # a frontier of another metric is refused, naming the option
    frontier["metric"] = "val/loss"
    (tmp_path / "frontier.json").write_text(json.dumps(frontier))
    assert main(["compare", str(config), "--frontier", str(tmp_path / "frontier.json"), "--plot",
                 str(tmp_path / "c.png")]) == 2
    assert "--frontier:" in capsys.readouterr().err


def test_the_same_run_under_another_length_is_reused_not_retrained(tmp_path: Path, capsys) -> None:
    short = write_config(tmp_path, "short", steps=4)
    out = tmp_path / "sweep"
    assert main(["sweep", str(short), "--budgets", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    # half of a length-8 config is exactly the length-4 run (the schedule anneals over the run's own length)
    long = write_config(tmp_path, "long", steps=8)
    assert main(["sweep", str(long), "--budgets", "0.5", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "the same run as short at budget 1: reused" in printed
    assert printed.count(": training") == 1  # only budget 1 of the long config
    records = {(r.label, r.budget): r for r in sweep.read_records(out)}
    assert records[("long", 0.5)].value == records[("short", 1.0)].value
    assert records[("long", 0.5)].run_hash == records[("short", 1.0)].run_hash
    assert records[("long", 1.0)].run_hash != records[("short", 1.0)].run_hash
