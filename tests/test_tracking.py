"""MLflow tracking against a real `mlflow server`: what a run logs, outages, fallback, resume."""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from conftest import MlflowServer, free_port, tiny_config_dict
from pydantic import BaseModel, ConfigDict

import hasten
from hasten.builtins.tracking import FALLBACK_FILE, RUN_ID_FILE, SYNCED_FILE, Sender, git_commit
from hasten.cli import main as cli_main
from hasten.config import validate_config
from hasten.engine import train
from hasten.plugins import register_plugin, unregister_plugin

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402


def config_for(tmp_path: Path, uri: str, **sections: Any) -> hasten.Config:
    sections.setdefault("tracking", {})
    sections["tracking"] = {"enabled": True, "uri": uri, "experiment": "tests", **sections["tracking"]}
    return validate_config(tiny_config_dict(tmp_path, **sections))


def steps_of(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_run_logs_params_metrics_artifacts_plots(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    config = config_for(tmp_path, mlflow_server.uri, run={"max_steps": 6, "log_every": 2}, eval={"every_steps": 3})
    result = train(config)
    run_id = result.state.scratch["tracking"]["run_id"]
    assert (Path(result.run_dir) / RUN_ID_FILE).read_text().strip() == run_id

    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["optim.lr"] == "0.05"
    assert params["data.batch_size"] == "16"
    assert params["model.name"] == "small_resnet"
    assert params["version.torch"] == torch.__version__
    assert params["version.hasten"] == hasten.__version__
    assert params["flops.backward_factor"] == "2.0"
    assert params["flops.counter"] == "fvcore"

    # Training metrics every log_every=2 steps (steps are 0-based: 1, 3, 5).
    assert steps_of(client, run_id, "train/loss") == [1, 3, 5]
    for key in ("train/lr", "train/momentum", "train/resolution", "train/aug_magnitude", "train/throughput"):
        assert steps_of(client, run_id, key) == [1, 3, 5], key
    lrs = [m.value for m in sorted(client.get_metric_history(run_id, "train/lr"), key=lambda m: m.step)]
    assert lrs[0] > lrs[1] > lrs[2]  # cosine decays
    # Evaluations after steps 3 and 6 are logged at step 2 and 5, with their cost beside them.
    assert steps_of(client, run_id, "val/acc1") == [2, 5]
    flops = {m.step: m.value for m in client.get_metric_history(run_id, "flops/total")}
    assert sorted(flops) == [1, 2, 3, 5]  # step 5 once, although both train and eval metrics were logged there
    assert flops[5] == pytest.approx(result.metrics["flops/total"])
    assert flops[2] == pytest.approx(flops[5] / 2)  # 3 of 6 equal steps
    elapsed = {m.step: m.value for m in client.get_metric_history(run_id, "time/elapsed")}
    assert 0 < elapsed[1] <= elapsed[5]

    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "summary.json", "weights.pt", "plots"} <= top
    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert plots == {"plots/schedules.png", "plots/loss.png", "plots/metric_vs_flops.png", "plots/metric_vs_time.png"}
    local = Path(client.download_artifacts(run_id, "plots/metric_vs_flops.png", str(tmp_path)))
    assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    weights = torch.load(client.download_artifacts(run_id, "weights.pt", str(tmp_path)), weights_only=True)
    final = result.state.model.state_dict()
    assert weights.keys() == final.keys()
    assert all(torch.equal(weights[k], final[k]) for k in final)

    commit = git_commit()
    if commit is not None:
        assert run.data.tags["mlflow.source.git.commit"] == commit[0]


class ServerOutage(hasten.Plugin):
    """Stops the test's MLflow server at one step and restarts it at a later one."""

    name = "server_outage"
    server: ClassVar[MlflowServer | None] = None

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        stop_at: int = 2
        restart_at: int = 5

    @hasten.hookimpl
    def hasten_step_start(self, state: hasten.State) -> None:
        assert self.server is not None
        if state.step == self.settings.stop_at:
            self.server.stop()
        elif state.step == self.settings.restart_at:
            self.server.start(wait=False)  # training goes on while it boots


@pytest.fixture
def outage_plugin(mlflow_server: MlflowServer):
    ServerOutage.server = mlflow_server
    register_plugin(ServerOutage)
    yield ServerOutage
    unregister_plugin(ServerOutage.name)
    ServerOutage.server = None


def test_server_goes_away_and_returns_nothing_lost(tmp_path: Path, mlflow_server: MlflowServer, outage_plugin) -> None:
    steps = 10
    config = config_for(
        tmp_path, mlflow_server.uri, run={"max_steps": steps, "log_every": 1}, eval={"every_steps": 5},
        plugins={"server_outage": {"stop_at": 2, "restart_at": 5}},
    )
    result = train(config)
    info = result.state.scratch["tracking"]
    assert info["failures"] >= 1, "the outage was not noticed: the test did not test it"
    assert info["unsent"] == 0 and not (Path(result.run_dir) / FALLBACK_FILE).exists()
    assert result.steps == steps
    mlflow_server.wait_ready()

    client = MlflowClient(mlflow_server.uri)
    run_id = info["run_id"]
    for key in ("train/loss", "train/lr", "flops/total", "time/elapsed"):
        assert set(steps_of(client, run_id, key)) == set(range(steps)), key
    assert steps_of(client, run_id, "val/acc1") == [4, 9]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(run_id)} >= {"config.yaml", "weights.pt", "plots"}


def test_unreachable_server_writes_fallback_and_sync_sends_it(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = config_for(
        tmp_path, nobody, run={"max_steps": 4, "log_every": 1}, eval={"every_steps": 2},
        tracking={"flush_timeout": 0.5, "artifacts": True},
    )
    result = train(config)  # training is not stopped by the missing server
    assert result.steps == 4
    fallback = Path(result.run_dir) / FALLBACK_FILE
    ops = [json.loads(line) for line in fallback.read_text().splitlines()]
    assert ops[0]["op"] == "open" and ops[0]["run_id"] is None and ops[0]["uri"] == nobody
    saved_steps = {row[3] for op in ops if op["op"] == "metrics" for row in op["metrics"] if row[0] == "train/loss"}
    assert saved_steps == {0, 1, 2, 3}
    assert sum(op["op"] == "artifact" for op in ops) == 7  # config, summary, weights, 4 plots

    assert cli_main(["sync", result.run_dir, "--uri", mlflow_server.uri]) == 0
    run_id = (Path(result.run_dir) / RUN_ID_FILE).read_text().strip()
    client = MlflowClient(mlflow_server.uri)
    assert steps_of(client, run_id, "train/loss") == [0, 1, 2, 3]
    assert steps_of(client, run_id, "val/acc1") == [1, 3]
    assert client.get_run(run_id).data.params["optim.lr"] == "0.05"
    assert client.get_run(run_id).info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(run_id, "plots")} >= {"plots/loss.png"}
    assert not fallback.exists() and (Path(result.run_dir) / SYNCED_FILE).exists()
    assert cli_main(["sync", result.run_dir]) == 2  # nothing left to send: a clear error


def test_slow_server_does_not_slow_logging_and_keeps_everything() -> None:
    """A server that accepts connections but never answers: put() stays cheap and
    nothing is lost (the unsent operations come back from close())."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        sender = Sender(f"http://127.0.0.1:{silent.getsockname()[1]}", background=True)
        sender.put({"op": "open", "experiment": "tests", "run_id": None, "run_name": "slow", "tags": {}})
        started = time.perf_counter()
        for step in range(2000):
            sender.put({"op": "metrics", "metrics": [["train/loss", 1.0, 0, step]]})
        per_call = (time.perf_counter() - started) / 2000
        assert per_call < 50e-6, f"put() took {per_call * 1e6:.1f} us"
        assert not sender.flush(timeout=0.3)
        left = sender.close(join_timeout=0.1)
    assert len(left) == 2001 and left[0]["op"] == "open"
    assert [op["metrics"][0][3] for op in left[1:]] == list(range(2000))


class StopEarly(hasten.Plugin):
    """Ends training gracefully after one step (as a budget or a signal would)."""

    name = "stop_early"

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        after: int = 3

    @hasten.hookimpl
    def hasten_step_end(self, state: hasten.State, output: hasten.StepOutput) -> None:
        if state.step == self.settings.after:
            state.should_stop = "test"


def test_resumed_run_continues_the_same_mlflow_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the local store's artifacts land here
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    register_plugin(StopEarly)
    try:
        first = train(config_for(
            tmp_path, uri, run={"max_steps": 6, "log_every": 1, "checkpoint_every": 2},
            eval={"every_steps": 100}, plugins={"stop_early": {"after": 3}},
        ))
    finally:
        unregister_plugin(StopEarly.name)
    assert first.steps == 4
    run_id = first.state.scratch["tracking"]["run_id"]
    run = {"max_steps": 6, "log_every": 1, "checkpoint_every": 2}
    second = train(config_for(tmp_path, uri, run=run, eval={"every_steps": 100}), resume=True)
    assert second.steps == 6
    assert second.state.scratch["tracking"]["run_id"] == run_id
    client = MlflowClient(uri)
    assert len(client.search_runs([client.get_experiment_by_name("tests").experiment_id])) == 1
    assert steps_of(client, run_id, "train/loss") == [0, 1, 2, 3, 4, 5]
    elapsed = sorted(client.get_metric_history(run_id, "time/elapsed"), key=lambda m: m.step)
    assert all(a.value <= b.value for a, b in itertools.pairwise(elapsed))  # summed over the resume
    assert client.get_run(run_id).info.status == "FINISHED"
    # The mirrored history behind the plots covers both parts of the run.
    rows = [json.loads(line) for line in (Path(second.run_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "train/loss" in row["metrics"]] == [0, 1, 2, 3, 4, 5]


def test_git_commit_dirty_ignores_the_given_paths(tmp_path: Path) -> None:
    """A study's own output (its RESULTS.md section, its records) does not mark the code it trains with as
    changed; a changed source file does, wherever the process runs in the tree."""
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "RESULTS.md").write_text("old\n")
    (tmp_path / "results" / "r.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "x")
    ignore = ("*.md", "results")
    assert git_commit(tmp_path, ignore)[1] is False  # type: ignore[index]
    (tmp_path / "RESULTS.md").write_text("new\n")
    (tmp_path / "results" / "r.json").write_text('{"a": 1}\n')
    assert git_commit(tmp_path)[1] is True  # type: ignore[index]
    assert git_commit(tmp_path, ignore)[1] is False  # type: ignore[index]
    assert git_commit(tmp_path / "results", ignore)[1] is False  # type: ignore[index]
    (tmp_path / "code.py").write_text("a = 2\n")
    assert git_commit(tmp_path / "results", ignore)[1] is True  # type: ignore[index]


def test_git_commit_is_optional(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert git_commit(tmp_path) is None  # not a repository
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable at all
    assert git_commit() is None


def test_refused_operation_is_set_aside_not_blocking(tmp_path: Path) -> None:
    """A metric MLflow refuses for good (an invalid key) does not hold back the
    ones queued behind it; it is kept with the error."""
    sender = Sender(f"sqlite:///{tmp_path / 'm.db'}", background=False)
    sender.put({"op": "open", "experiment": "tests", "run_id": None, "run_name": "refused", "tags": {}})
    assert sender.run_id is not None
    sender.pending.append({"op": "metrics", "metrics": [["bad key!?", 1.0, 0, 0]]})
    sender.pending.append({"op": "params", "params": {"a": "1"}})
    sender.enqueued += 2
    sender.put({"op": "metrics", "metrics": [["good", 2.0, 0, 1]]})
    assert sender.flush(timeout=5)
    assert [op for op, _ in sender.rejected] == [{"op": "metrics", "metrics": [["bad key!?", 1.0, 0, 0]]}]
    assert "INVALID_PARAMETER_VALUE" in sender.rejected[0][1]
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    assert [(m.step, m.value) for m in client.get_metric_history(sender.run_id, "good")] == [(1, 2.0)]
    assert client.get_run(sender.run_id).data.params == {"a": "1"}
