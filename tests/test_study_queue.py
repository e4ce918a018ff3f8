"""benchmarks/frontier.py's queue with --until: a run that would not finish before a session's end is not
started (it would lose its progress with the machine); estimates come from the recipe's own records."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from hasten.commands import sweep
from hasten.testing import tiny_config_dict

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import frontier  # noqa: E402  (benchmarks/ is not a package)


def record(entry: sweep.SweepConfig, budget: float, seed: int, steps: int, wall_time: float) -> sweep.SweepRecord:
    return sweep.SweepRecord(label=entry.label, config_hash=entry.config_hash, budget=budget, seed=seed,
                             steps=steps, metric="val/acc1", value=0.5, train_flops=1.0, wall_time=wall_time,
                             images_loaded=1.0, run_id=None, tracking_uri=None)


@pytest.fixture
def study(tmp_path: Path):
    configs = {"uniform": tiny_config_dict(tmp_path, run={"max_steps": 1000}),
               "other": tiny_config_dict(tmp_path, run={"max_steps": 1000}, optim={"lr": 0.07})}
    out = tmp_path / "study"
    entries = frontier.write_entries(configs, out, "frontier", "tests")
    uniform = entries[0]
    # the baseline's records: 0.2 s and 0.3 s per step (median of the two by the upper middle: 0.3)
    for seed, wall in ((0, 200.0), (1, 300.0)):
        sweep.write_record(sweep.record_path(out, "uniform", uniform.config_hash, 1.0, seed),
                           record(uniform, 1.0, seed, 1000, wall))
    return out, entries


def test_the_estimate_uses_the_recipes_records_else_the_baselines_and_what_a_checkpoint_saved(study) -> None:
    out, (uniform, other) = study
    # "other" has no record of its own: the baseline's 0.3 s/step, 500 steps at budget 1/2
    assert frontier.estimated_seconds(out, other, 0.5, 0, [uniform, other]) == pytest.approx(60 + 1.15 * 500 * 0.3)
    sweep.write_record(sweep.record_path(out, "other", other.config_hash, 1.0, 0), record(other, 1.0, 0, 1000, 100.0))
    assert frontier.estimated_seconds(out, other, 0.5, 0, [uniform, other]) == pytest.approx(60 + 1.15 * 500 * 0.1)
    # a killed run's newest checkpoint at step 400 of 500: 100 steps left
    folder = sweep.run_dir_path(out, "other", other.config_hash, 0.5, 0) / "checkpoints"
    folder.mkdir(parents=True)
    for step in (200, 400):
        (folder / f"step-{step:09d}.pt").write_bytes(b"")
    assert frontier.estimated_seconds(out, other, 0.5, 0, [uniform, other]) == pytest.approx(60 + 1.15 * 100 * 0.1)


def test_a_queue_starts_nothing_that_would_not_end_before_until(study, capsys) -> None:
    out, entries = study
    queue = out / "queue.txt"
    queue.write_text("uniform|1|0\nother|1|0\nuniform|0.5|2\n", encoding="utf-8")  # the first is done
    started = time.time()
    frontier.run_queue(queue, entries, out, [1.0], until=time.time() + 120)  # each needs about 6 minutes
    assert time.time() - started < 30  # nothing trained
    printed = capsys.readouterr().out
    assert "no queued run fits before --until" in printed and "2 left" in printed
    assert "uniform budget 0.5 seed 2, needs about 4 min" in printed  # the shortest: 60 s + 1.15 x 500 x 0.3 s
    assert not sweep.record_path(out, "other", entries[1].config_hash, 1.0, 0).is_file()


@pytest.mark.parametrize("text", ["25:99", "noon", "00:00"])
def test_a_bad_or_past_until_exits_2_naming_it(text: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        frontier.parse_until(text)
    assert stop.value.code == 2
    assert "--until" in capsys.readouterr().err


def test_drivers_sharing_a_queue_pass_over_the_run_another_one_trains(study, capsys) -> None:
    out, entries = study
    uniform, other = entries
    queue = out / "queue.txt"
    queue.write_text("uniform|0.01|5\nother|0.01|5\n", encoding="utf-8")  # 10 steps each
    held = sweep.run_claim(out, uniform, 0.01, 5).acquire()  # the other driver, training the first line
    try:
        frontier.run_queue(queue, entries, out, [1.0])
    finally:
        held.release()
    assert sweep.record_path(out, "other", other.config_hash, 0.01, 5).is_file()
    assert not sweep.record_path(out, "uniform", uniform.config_hash, 0.01, 5).is_file()
    assert "every queued run has a record or is being trained by another driver" in capsys.readouterr().out
