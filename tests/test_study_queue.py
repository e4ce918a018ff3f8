"""benchmarks/study_queue.py, the long studies' queue with --until: a run that would not finish before a session's
end is not started (it would lose its progress with the machine); estimates come from the recipe's own records."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from hasten.commands import sweep
from hasten.errors import TrainingInterrupted, TrainingStopped
from hasten.testing import tiny_config_dict

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import frontier  # noqa: E402  (benchmarks/ is not a package)
import study_queue  # noqa: E402
import ubn_long  # noqa: E402


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
    assert study_queue.estimated_seconds(out, other, 0.5, 0, uniform.label) == pytest.approx(60 + 1.15 * 500 * 0.3)
    sweep.write_record(sweep.record_path(out, "other", other.config_hash, 1.0, 0), record(other, 1.0, 0, 1000, 100.0))
    assert study_queue.estimated_seconds(out, other, 0.5, 0, uniform.label) == pytest.approx(60 + 1.15 * 500 * 0.1)
    # a killed run's newest checkpoint at step 400 of 500: 100 steps left
    folder = sweep.run_dir_path(out, "other", other.config_hash, 0.5, 0) / "checkpoints"
    folder.mkdir(parents=True)
    for step in (200, 400):
        (folder / f"step-{step:09d}.pt").write_bytes(b"")
    assert study_queue.estimated_seconds(out, other, 0.5, 0, uniform.label) == pytest.approx(60 + 1.15 * 100 * 0.1)


def test_a_queue_starts_nothing_that_would_not_end_before_until(study, capsys) -> None:
    out, entries = study
    queue = out / "queue.txt"
    queue.write_text("uniform|1|0\nother|1|0\nuniform|0.5|2\n", encoding="utf-8")  # the first is done
    started = time.time()
    study_queue.run_queue(study_queue.queue_file_plan(queue, entries), out, str(queue), until=time.time() + 120,
                          reference=lambda entry: "uniform")  # each needs about 6 minutes
    assert time.time() - started < 30  # nothing trained
    printed = capsys.readouterr().out
    assert "no queued run fits before --until" in printed and "2 left" in printed
    assert "uniform budget 0.5 seed 2, needs about 4 min" in printed  # the shortest: 60 s + 1.15 x 500 x 0.3 s
    assert not sweep.record_path(out, "other", entries[1].config_hash, 1.0, 0).is_file()


@pytest.mark.parametrize("text", ["25:99", "noon", "00:00"])
def test_a_bad_or_past_until_exits_2_naming_it(text: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        study_queue.parse_until(text)
    assert stop.value.code == 2
    assert "--until" in capsys.readouterr().err


def test_drivers_sharing_a_queue_pass_over_the_run_another_one_trains(study, capsys) -> None:
    out, entries = study
    uniform, other = entries
    queue = out / "queue.txt"
    queue.write_text("uniform|0.01|5\nother|0.01|5\n", encoding="utf-8")  # 10 steps each
    held = sweep.run_claim(out, uniform, 0.01, 5).acquire()  # the other driver, training the first line
    try:
        study_queue.run_queue(study_queue.queue_file_plan(queue, entries), out, str(queue))
    finally:
        held.release()
    assert sweep.record_path(out, "other", other.config_hash, 0.01, 5).is_file()
    assert not sweep.record_path(out, "uniform", uniform.config_hash, 0.01, 5).is_file()
    assert "every queued run has a record, is being trained by another driver" in capsys.readouterr().out


@pytest.mark.parametrize(("line", "expected"), [
    ("uniform|1", "expected 'LABEL|BUDGET|SEED'"),
    ("nobody|0.5|0", "unknown recipe 'nobody'; known: uniform, other"),
    ("other|2|0", "budget must be in (0, 1] and seed >= 0"),  # only the baseline has a plateau budget above 1
    ("uniform|3|0", "budget must be in (0, 1] or 2 and seed >= 0"),
    ("uniform|1/2|-1", "budget must be in (0, 1] or 2 and seed >= 0"),
])
def test_a_bad_queue_line_exits_2_naming_the_file_and_line(study, line: str, expected: str, capsys) -> None:
    out, entries = study
    queue = out / "queue.txt"
    queue.write_text(f"# the order\nuniform|2|0\n{line}\n", encoding="utf-8")
    with pytest.raises(SystemExit) as stop:
        study_queue.queue_file_plan(queue, entries, {"uniform": [1.0, 2.0]})()
    assert stop.value.code == 2
    assert f"{queue}:3: {expected}" in capsys.readouterr().err


def test_the_queue_is_read_again_before_every_run_and_a_failed_run_is_not_retried(study, capsys) -> None:
    out, (uniform, other) = study
    queue = out / "queue.txt"
    queue.write_text("other|0.5|0\nuniform|0.5|0\n", encoding="utf-8")
    trained = []

    def train(item: study_queue.Item) -> None:  # every run "fails": it leaves no record
        entry, budget, seed = item
        trained.append((entry.label, budget, seed))
        if len(trained) == 1:  # the study's owner reorders the queue while the first run trains
            queue.write_text("uniform|0.25|3\nother|0.5|0\nuniform|0.5|0\n", encoding="utf-8")

    study_queue.run_queue(study_queue.queue_file_plan(queue, [uniform, other]), out, str(queue), train=train)
    assert trained == [("other", 0.5, 0), ("uniform", 0.25, 3), ("uniform", 0.5, 0)]  # each once, new order
    assert "failed in this process" in capsys.readouterr().out


@pytest.mark.parametrize("script", ["frontier", "ssl_frontier", "ubn_long"])
@pytest.mark.parametrize("flag", [["--until", "23:59"], ["--queue", "queue.txt"]])
def test_every_study_refuses_a_queue_or_deadline_for_all_datasets(script: str, flag: list[str], monkeypatch,
                                                                  capsys) -> None:
    module = __import__(script)
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *flag])
    with pytest.raises(SystemExit) as stop:
        module.main()
    assert stop.value.code == 2
    assert f"{flag[0]}: name the dataset it is for with --dataset" in capsys.readouterr().err


def test_the_ubn_study_goes_on_after_a_failed_run_and_stops_at_a_signal(study, monkeypatch, capsys) -> None:
    out, (uniform, _other) = study
    studies = {"depth": ({}, out)}
    stops = [TrainingStopped("non-finite loss at step 3", 3), TrainingInterrupted("stopped by SIGTERM", 3, None, 15)]

    def run_plan(items, out, log):  # what the engine raises for a diverged run, then at a session's end
        raise stops.pop(0)

    monkeypatch.setattr(ubn_long.sweep, "run_plan", run_plan)
    ubn_long.train_and_diagnose("depth", (uniform, 0.5, 0), studies, True, 1)  # the study goes on
    assert "uniform, budget 0.5, seed 0: FAILED (non-finite loss at step 3)" in capsys.readouterr().out
    with pytest.raises(TrainingInterrupted):  # SIGTERM stops the whole study, not only this run
        ubn_long.train_and_diagnose("depth", (uniform, 0.5, 0), studies, True, 1)
