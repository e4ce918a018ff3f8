"""Tracking overhead: step time with MLflow tracking to a real local
`mlflow server`, logging every step (run.log_every = 1), against tracking
off, in one run.

    python benchmarks/tracking_overhead.py [--steps 300] [--repeats 3] [--quick]

Starts `mlflow server` on 127.0.0.1 (SQLite backend in a temporary folder),
then trains the same config with tracking off and on, interleaved,
`--repeats` times each, and compares the best seconds per step of each
(after the warm-up steps; opening the MLflow run and the final flush are
outside the timed window, the background sending of every step's metrics is
inside it).
Prints the ratio on / off (target <= 1.01). `--quick` checks the script in
seconds (a tiny model, few steps; its ratio means nothing).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import torch

from hasten.config import validate_config
from hasten.engine import train
from hasten.hookspecs import hookimpl
from hasten.plugins import Plugin
from hasten.state import State


class StepClock(Plugin):
    """Times the steps after the warm-up, from inside the engine."""

    name = "step_clock"

    def __init__(self, warmup: int) -> None:
        super().__init__()
        self.warmup = warmup
        self.start = 0.0
        self.end = 0.0

    @hookimpl(tryfirst=True)
    def hasten_step_start(self, state: State) -> None:
        if state.step == self.warmup:
            # Opening the MLflow run (create run, tags, ~80 params) is a one-time
            # cost: let it finish before the timed window, which measures steady state.
            sender = state.scratch.get("tracking", {}).get("sender")
            deadline = time.monotonic() + 120
            while sender is not None and sender.sent < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            self.start = time.perf_counter()

    @hookimpl(trylast=True)
    def hasten_step_end(self, state: State, output: object) -> None:
        if state.step == state.total_steps - 1:
            self.end = time.perf_counter()


def start_server(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A local `mlflow server` (its own process group) and its URI, once it answers /health."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "art"),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=1):
                return process, uri
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start") from None
            time.sleep(0.2)


def make_config(args: argparse.Namespace, workdir: Path, uri: str | None) -> dict[str, Any]:
    return {
        "run": {"name": "tracking-overhead", "max_steps": args.steps, "log_every": 1, "run_dir": str(workdir),
                "progress": False},
        "data": {"dataset": "procedural", "resolution": 32, "batch_size": args.batch_size,
                 "options": {"train_size": 5000, "val_size": 200}},
        "model": {"name": "small_resnet", "options": {"width": args.width} if args.width else {}},
        "optim": {"lr": 0.1, "nesterov": True},
        "eval": {"every_steps": 10**6, "batch_size": 200, "max_batches": 1},
        "tracking": {"enabled": uri is not None, "uri": uri, "experiment": "tracking-overhead", "artifacts": False},
    }


def step_time(args: argparse.Namespace, workdir: Path, uri: str | None) -> float:
    clock = StepClock(args.warmup)
    result = train(validate_config(make_config(args, workdir, uri)), extra_builtins=[clock])
    assert result.steps == args.steps
    if uri is not None:
        info = result.state.scratch["tracking"]
        assert info["unsent"] == 0 and info["run_id"], info  # everything reached the server
    return (clock.end - clock.start) / (args.steps - args.warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=int, default=None, help="small_resnet width (default: the model's)")
    parser.add_argument("--quick", action="store_true", help="a seconds-long check of the script")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.repeats, args.batch_size, args.width = 20, 5, 1, 16, 8
    off, on = [], []
    with tempfile.TemporaryDirectory() as tmp:
        server, uri = start_server(Path(tmp) / "server")
        try:
            for i in range(args.repeats):
                off.append(step_time(args, Path(tmp) / f"off{i}", None))
                on.append(step_time(args, Path(tmp) / f"on{i}", uri))
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    ratio = min(on) / min(off)
    from common import code_block, tee, write_section  # benchmarks/common.py: the RESULTS.md writer

    with tee() as report:
        _report(args, uri, off, on, ratio)
    write_section("tracking_overhead", "Tracking overhead (MLflow server, log_every 1)", code_block(report.text),
                  quick=args.quick)


def _report(args: argparse.Namespace, uri: str, off: list[float], on: list[float], ratio: float) -> None:
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    print(f"steps per run: {args.steps} ({args.warmup} warm-up), repeats: {args.repeats} (best of each), "
          f"log_every 1, server {uri}")
    print(f"tracking off: {min(off) * 1e3:.2f} ms/step")
    print(f"tracking on:  {min(on) * 1e3:.2f} ms/step")
    print(f"ratio on / off: {ratio:.4f}  (target <= 1.01)")


if __name__ == "__main__":
    main()
