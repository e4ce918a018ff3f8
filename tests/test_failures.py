"""Failure behaviour: NaN stop, corrupt images, signals, unsafe checkpoints, a run directory in use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config_dict
from torchvision.io import write_jpeg

import hasten
from hasten.checkpoint import latest_checkpoint, load_checkpoint
from hasten.cli import main
from hasten.config import validate_config
from hasten.engine import train
from hasten.errors import TrainingInterrupted
from hasten.plugins import register_plugin, unregister_plugin

REPO = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO / "core"), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def write_yaml(path: Path, config: dict) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


def tiny(tmp_path: Path, **sections) -> dict:
    """conftest's tiny run on one thread (the machine's cores are shared with other test runs)."""
    config = tiny_config_dict(tmp_path, **sections)
    config["run"]["threads"] = 1
    return config


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*.pt"))


# ------------------------------------------------------------------ NaN stop
class ExplodeAtStep5(hasten.Plugin):
    name = "explode5"

    @hasten.hookimpl
    def hasten_forward(self, state, batch):
        out = state.task.forward(state, batch, state.model)
        if state.step == 5:
            out.loss = out.loss * float("nan")
        return out


def test_nan_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    register_plugin(ExplodeAtStep5)
    try:
        config = tiny(tmp_path, run={"max_steps": 10, "log_every": 3, "checkpoint_every": 2},
                                  plugins={"explode5": {}})
        code = main(["train", write_yaml(tmp_path / "c.yaml", config)])
    finally:
        unregister_plugin("explode5")
    err = capsys.readouterr().err
    run_dir = tmp_path / "run"
    good = run_dir / "checkpoints" / "step-000000004.pt"
    assert code == 1
    assert "non-finite loss at step 5" in err and str(good) in err
    # NaN weights from step 5 on were never written (step 6 would have been): step 4 is the newest.
    assert checkpoint_steps(run_dir) == [2, 4]
    assert latest_checkpoint(run_dir) == good
    weights = load_checkpoint(good)["model"]
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


# ------------------------------------------------------------------ corrupt JPEG
def make_image_folder(root: Path) -> Path:
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 8), ("val", 4)):
        for cls in ("a", "b"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                image = torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8, generator=generator)
                write_jpeg(image, str(folder / f"{i:02d}.jpg"))
    corrupt = root / "train" / "a" / "03.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG any more")
    return corrupt


def folder_config(tmp_path: Path, root: Path, **data) -> dict:
    return tiny(
        tmp_path,
        run={"max_steps": 4, "log_every": 2},
        data={"dataset": "imagefolder", "path": str(root), "resolution": 16, "batch_size": 8, "options": {},
              **data},
    )


def test_corrupt_jpeg_error_names_the_file(tmp_path, capsys):
    corrupt = make_image_folder(tmp_path / "images")
    code = main(["train", write_yaml(tmp_path / "c.yaml", folder_config(tmp_path, tmp_path / "images"))])
    err = capsys.readouterr().err
    assert code == 2  # DataError is a UserError: a message, no traceback
    assert str(corrupt) in err and "Traceback" not in err


def test_corrupt_jpeg_skipped_and_counted_with_skip_corrupt(tmp_path, capsys):
    corrupt = make_image_folder(tmp_path / "images")
    config = validate_config(folder_config(tmp_path, tmp_path / "images", skip_corrupt=True))
    result = train(config)  # 4 steps of 8 = two epochs of 16 images: the corrupt one is met
    assert result.steps == 4
    assert result.metrics["data/skipped_files"] == 1.0
    assert result.state.data.skipped_files == [str(corrupt)]
    assert f"skipped unreadable data file {corrupt}" in capsys.readouterr().err


def test_skip_corrupt_on_an_in_memory_dataset_names_the_setting(tmp_path):
    with pytest.raises(hasten.UserError, match=r"data\.skip_corrupt: dataset 'procedural'"):
        train(validate_config(tiny(tmp_path, data={"skip_corrupt": True})))


# ------------------------------------------------------------------ signals
class SigintAtStep3(hasten.Plugin):
    """Delivers a real SIGINT to this process during step 3 (as Ctrl-C would)."""

    name = "sigint3"

    @hasten.hookimpl
    def hasten_step_end(self, state, output):
        if state.step == 3:
            os.kill(os.getpid(), signal.SIGINT)


def test_sigint_finishes_the_step_writes_a_checkpoint_and_exits_130(tmp_path):
    register_plugin(SigintAtStep3)
    previous = signal.getsignal(signal.SIGINT)
    try:
        config = validate_config(tiny(tmp_path, run={"max_steps": 10}, plugins={"sigint3": {}}))
        with pytest.raises(TrainingInterrupted) as info:
            train(config)  # no checkpoint_every: the signal alone writes one
    finally:
        unregister_plugin("sigint3")
    assert signal.getsignal(signal.SIGINT) is previous  # handlers restored
    stop = info.value
    assert stop.step == 4 and stop.exit_code == 130 and "SIGINT" in str(stop)
    assert checkpoint_steps(tmp_path / "run") == [4]
    assert load_checkpoint(stop.checkpoint)["step"] == 4
    resumed = train(validate_config(tiny(tmp_path, run={"max_steps": 10})), resume=True)
    assert resumed.steps == 10 and len(resumed.losses) == 6  # continued from step 4


def test_sigterm_from_outside_checkpoints_and_exits_143(tmp_path):
    config = tiny(tmp_path, run={"max_steps": 400, "checkpoint_every": 4, "threads": 1,
                                             "device": "cpu"})
    config["model"]["options"]["width"] = 4
    path = write_yaml(tmp_path / "c.yaml", config)
    child = subprocess.Popen([sys.executable, "-m", "hasten", "train", path], env=child_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = tmp_path / "run" / "checkpoints" / "step-000000004.pt"
    deadline = time.monotonic() + 120
    while not first.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143, err
    assert "SIGTERM received: stopped after step" in err
    stopped = int(err.split("stopped after step ")[1].split()[0])
    assert 4 <= stopped < 400  # the signal may land while step 4 is still finishing
    assert checkpoint_steps(tmp_path / "run")[-1] == stopped
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / f"step-{stopped:09d}.pt")["step"] == stopped


# ------------------------------------------------------------------ unsafe files
class RunsCode:
    """Unpickling this would call os.system: a checkpoint must never be able to do that."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_carrying_a_code_running_pickle_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    bad = tmp_path / "run" / "checkpoints" / "step-000000003.pt"
    bad.parent.mkdir(parents=True)
    torch.save({"step": 3, "model": {}, "payload": RunsCode(marker)}, bad)
    with pytest.raises(hasten.UserError, match="refused by the safe loader") as info:
        load_checkpoint(bad)
    assert str(bad) in str(info.value)
    # --resume refuses it (the only checkpoint: nothing to resume from), naming it, and leaves it as it was;
    # the code never ran.
    content = bad.read_bytes()
    with pytest.raises(hasten.UserError, match="can be read"):
        latest_checkpoint(tmp_path / "run")
    with pytest.raises(hasten.UserError, match="nothing was changed") as info:
        train(validate_config(tiny(tmp_path, run={"max_steps": 2})), resume=True)
    assert str(bad) in str(info.value)
    assert bad.read_bytes() == content
    assert not marker.exists()


def test_fresh_run_refuses_a_run_directory_with_checkpoints(tmp_path):
    train(validate_config(tiny(tmp_path, run={"max_steps": 2, "checkpoint_every": 2})))
    with pytest.raises(hasten.UserError, match=r"already holds checkpoints.*--resume"):
        train(validate_config(tiny(tmp_path, run={"max_steps": 2, "checkpoint_every": 2})))


# ------------------------------------------------------------------ run directory lock
def test_second_run_on_a_live_run_directory_refuses_then_takes_over_a_stale_lock(tmp_path, capsys):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from hasten.rundir import RunDirLock; "
         f"lock = RunDirLock({str(run_dir)!r}).acquire(); print('held', flush=True); time.sleep(120)"],
        env=child_env(), stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        path = write_yaml(tmp_path / "c.yaml", tiny(tmp_path, run={"max_steps": 2}))
        assert main(["train", path]) == 2
        err = capsys.readouterr().err
        assert f"run directory {run_dir} is in use by a live run (pid {holder.pid}" in err
    finally:
        holder.kill()  # SIGKILL: no clean-up, the lock file stays behind
        holder.wait()
    assert (run_dir / "hasten.lock").exists()
    assert main(["train", path]) == 0  # the dead owner's lock is taken over
    assert f"pid {os.getpid()}" in (run_dir / "hasten.lock").read_text()
