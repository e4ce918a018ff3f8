"""A run killed with SIGKILL at random steps and resumed ends bit-identical to an uninterrupted run.

Each case is a real ``python -m hasten train`` process, checkpointing every
step, killed from outside the moment a chosen step's checkpoint appears (so
the kill lands anywhere in the next step or its checkpoint write), then
continued with ``--resume``. The final weights, optimizer state, FLOPs and
metrics must equal the uninterrupted run's exactly (CPU, deterministic).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
TOTAL_STEPS = 24  # 1.5 epochs of 16 steps: the resumes cross an epoch boundary


def write_config(tmp: Path) -> Path:
    config = {
        "run": {"name": "resume", "seed": 3, "max_steps": TOTAL_STEPS, "log_every": 5, "checkpoint_every": 1,
                "progress": False, "device": "cpu", "threads": 1},
        "data": {"dataset": "procedural", "resolution": 16, "batch_size": 16,
                 "options": {"train_size": 256, "val_size": 64}},
        "model": {"name": "small_resnet", "options": {"width": 4}},
        "optim": {"lr": 0.05},
        "eval": {"batch_size": 64, "every_steps": 8},
        "tracking": {"enabled": False},
    }
    path = tmp / "resume.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def hasten_command(config: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hasten", "train", str(config), "--set", f"run.run_dir={run_dir}", *extra]


def child_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO / "core"), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def final_checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / f"step-{TOTAL_STEPS:09d}.pt", weights_only=True)


def assert_identical(a, b, where: str = "") -> None:
    """Bit-identical nested checkpoint content (tensors with torch.equal)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    config = write_config(tmp)
    done = subprocess.run(hasten_command(config, tmp / "run"), env=child_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return config, final_checkpoint(tmp / "run")


# Three kill points drawn with a seeded RNG (reproducible), one of them with DataLoader workers.
KILL_STEPS = sorted(random.Random(10).sample(range(2, 19), 3))
CASES = [(KILL_STEPS[0], 0), (KILL_STEPS[1], 2), (KILL_STEPS[2], 0)]


@pytest.mark.parametrize(("kill_after", "num_workers"), CASES)
def test_sigkill_then_resume_is_bit_identical(reference, tmp_path, kill_after, num_workers):
    config, expected = reference
    run_dir = tmp_path / "run"
    command = hasten_command(config, run_dir, "--set", f"data.num_workers={num_workers}")
    child = subprocess.Popen(command, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marker = run_dir / "checkpoints" / f"step-{kill_after:09d}.pt"
    deadline = time.monotonic() + 120
    while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(child.pid, signal.SIGKILL)
    _, err = child.communicate()
    assert child.returncode == -signal.SIGKILL, f"the run ended before it was killed: {err}"
    written = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*.pt"))
    assert written and written[-1] < f"step-{TOTAL_STEPS:09d}.pt", written  # killed mid-run

    resumed = subprocess.run([*command, "--resume"], env=child_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
    got = final_checkpoint(run_dir)
    assert_identical(got["model"], expected["model"], "model")
    assert_identical(got["optimizer"], expected["optimizer"], "optimizer")
    assert_identical(got["flops"], expected["flops"], "flops")
    assert_identical(got["ranks"][0]["rng"], expected["ranks"][0]["rng"], "rng")
    for key in ("step", "epoch", "samples_seen", "images_loaded"):
        assert got[key] == expected[key], key
    # Every metric (train/loss over the logging window, val/*, flops/*) but wall-clock throughput.
    timing = {"train/throughput"}
    assert {k: v for k, v in got["metrics"].items() if k not in timing} == {
        k: v for k, v in expected["metrics"].items() if k not in timing
    }
