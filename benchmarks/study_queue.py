"""The long studies' run queue: one order of (recipe, budget, seed) runs, a session's deadline, shared drivers.

Used by ``frontier.py``, ``ssl_frontier.py`` and ``ubn_long.py``. A study's runs take hours on the 2-core
machine and a session ends at a fixed time, after which the machine (and every run folder, checkpoint
included) may go away. So a driver:

* takes its order from a queue file (``--queue``: one ``LABEL|BUDGET|SEED`` per line, re-read before every
  run so the order can change while the study runs) or else from the study's own plan;
* with a deadline (``--until``) starts a run only if its estimate ends before it, passing over longer runs
  for shorter ones, and stops when none fits: a run cut off at the end loses what it trained since its last
  checkpoint, or all of it with the machine;
* passes over a run another driver trains (``hasten sweep``'s claim), so several drivers can share one queue;
* passes over a run it tried in this process that left no record (a failed run), instead of retrying it
  forever; a rerun of the script tries it again.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from hasten.checkpoint import checkpoint_steps
from hasten.commands import sweep

Item = tuple[sweep.SweepConfig, float, int]
#: a study's planned runs, in its order; called again before every run (records appear as the study runs)
PlanSource = Callable[[], list[Item]]


def queue_error(message: str) -> NoReturn:
    """A bad queue file or deadline: one line naming the file and line (or the argument) and what is allowed."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def queued_item(line: str, by_label: Mapping[str, sweep.SweepConfig], where: str,
                longer: Mapping[str, Sequence[float]] | None = None) -> Item:
    """One queue line 'LABEL|BUDGET|SEED' (BUDGET a number or a fraction such as 2/3) as a plan item. Budgets are
    in (0, 1], or one of ``longer[label]`` (a baseline's plateau budgets, e.g. 2)."""
    try:
        label, budget_text, seed_text = (part.strip() for part in line.split("|"))
        numerator, _, denominator = budget_text.partition("/")
        budget = float(numerator) / float(denominator or 1)
        seed = int(seed_text)
    except ValueError:
        queue_error(f"{where}: expected 'LABEL|BUDGET|SEED', got {line!r}")
    if label not in by_label:
        queue_error(f"{where}: unknown recipe {label!r}; known: {', '.join(by_label)}")
    above_one = [b for b in (longer or {}).get(label, ()) if b > 1]
    if not (0 < budget <= 1 or budget in above_one) or seed < 0:
        allowed = "(0, 1]" + "".join(f" or {b:g}" for b in above_one)
        queue_error(f"{where}: budget must be in {allowed} and seed >= 0, got {line!r}")
    return by_label[label], budget, seed


def queue_file_plan(queue: Path, entries: Sequence[sweep.SweepConfig],
                    longer: Mapping[str, Sequence[float]] | None = None) -> PlanSource:
    """The plan a queue file describes, read afresh at every call (comments and blank lines skipped)."""
    by_label = {e.label: e for e in entries}

    def read() -> list[Item]:
        return [queued_item(line, by_label, f"{queue}:{number}", longer)
                for number, line in enumerate(queue.read_text(encoding="utf-8").splitlines(), 1)
                if line.strip() and not line.lstrip().startswith("#")]

    return read


def steps_done(out: Path, entry: sweep.SweepConfig, budget: float, seed: int) -> int:
    """The step of the newest checkpoint a killed run left (what it continues from), 0 if none."""
    return max(checkpoint_steps(sweep.run_dir_path(out, entry.label, entry.config_hash, budget, seed)), default=0)


def estimated_seconds(out: Path, entry: sweep.SweepConfig, budget: float, seed: int,
                      reference: str | None = None) -> float | None:
    """Wall-clock seconds a queued run still needs: its steps left x the median seconds per step of this
    recipe's records in ``out`` (else of the ``reference`` recipe's, its baseline), + 15% for evaluation and
    60 s to start; None with no record to go by. Records trained contiguous (slower) keep it on the safe side."""
    records = sweep.read_records(out)
    for label in (entry.label, reference):
        rates = sorted(r.wall_time / r.steps for r in records if r.label == label and r.steps)
        if rates:
            left = (sweep.with_budget(entry.config, budget).run.max_steps or 0) - steps_done(out, entry, budget, seed)
            return 60.0 + 1.15 * max(0, left) * rates[len(rates) // 2]
    return None


def parse_until(text: str) -> float:
    """``--until``: HH:MM (today, this machine's clock) or an ISO date and time; as a POSIX timestamp."""
    now = _dt.datetime.now()
    try:
        if len(text) <= 5:
            hours, minutes = (int(part) for part in text.split(":"))
            moment = now.replace(hour=hours, minute=minutes, second=0, microsecond=0)
        else:
            moment = _dt.datetime.fromisoformat(text)
    except ValueError:
        queue_error(f"--until: expected HH:MM or an ISO date and time (2026-12-02T16:10), got {text!r}")
    if moment <= now:
        queue_error(f"--until: {text} has passed (now {now:%Y-%m-%d %H:%M}); name a later time")
    return moment.timestamp()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A study script's ``--queue`` and ``--until``."""
    parser.add_argument("--queue", type=Path, default=None, metavar="FILE",
                        help="run in this order instead: one 'LABEL|BUDGET|SEED' per line (BUDGET may be 2/3), the "
                        "file re-read before every run so the order can change while the study runs; done ones "
                        "are skipped; several drivers may share one queue; needs one --dataset")
    parser.add_argument("--until", default=None, metavar="TIME",
                        help="start only runs whose estimate (from this recipe's records, else its baseline's) ends "
                        "before TIME (HH:MM today, or an ISO date and time), passing over longer ones, in the "
                        "queue's order or else the plan's; stop when none fits; needs one --dataset")


def checked_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> float | None:
    """Refuse ``--queue``/``--until`` without one ``--dataset`` (exit 2); the ``--until`` deadline, if any."""
    for flag, value in (("--queue", args.queue), ("--until", args.until)):
        if value is not None and args.dataset == "all":
            parser.error(f"{flag}: name the dataset it is for with --dataset")
    return parse_until(args.until) if args.until is not None else None


def train_one(out: Path) -> Callable[[Item], None]:
    """The default way a queue trains a run: ``hasten sweep``'s, claimed while it trains."""

    def train(item: Item) -> None:
        sweep.run_plan([item], out)

    return train


def run_queue(plan: PlanSource, out: Path, where: str, until: float | None = None,
              reference: Callable[[sweep.SweepConfig], str | None] = lambda entry: None,
              train: Callable[[Item], None] | None = None) -> None:
    """Train the plan's first run without a record that no other process trains, asking ``plan`` afresh before
    every run, until none is left; ``where`` names the plan in messages (the queue file, or the study).

    With ``until`` (a timestamp: a session's end), a run whose estimate (from its records, else from those of
    ``reference(entry)``) does not fit in the time left is passed over for the next one that fits, and the
    queue stops when none fits. ``train`` trains one item (and whatever the study does after it: a probe, a
    diagnostic); a run it leaves without a record (it failed) is not tried again by this process.
    """
    train = train or train_one(out)
    tried: set[tuple[str, float, int]] = set()
    while True:
        todo, passed_over = None, []
        for entry, budget, seed in plan():
            key = (entry.config_hash, budget, seed)
            if key in tried or sweep.record_path(out, entry.label, entry.config_hash, budget, seed).is_file():
                continue
            if sweep.in_training(out, entry, budget, seed) is not None:
                continue  # another driver on this queue trains it: several drivers share one queue
            needed = (estimated_seconds(out, entry, budget, seed, reference(entry))
                      if until is not None else None)
            if until is not None and needed is not None and time.time() + needed > until:
                passed_over.append((entry.label, budget, seed, needed))
                continue
            todo = (entry, budget, seed)
            break
        if todo is None:
            if passed_over:
                label, budget, seed, needed = min(passed_over, key=lambda item: item[3])
                print(f"{where}: no queued run fits before --until "
                      f"{_dt.datetime.fromtimestamp(until or 0):%H:%M} ({len(passed_over)} left; the shortest, "
                      f"{label} budget {budget:.3g} seed {seed}, needs about {needed / 60:.0f} min)", flush=True)
            else:
                print(f"{where}: every queued run has a record, is being trained by another driver, or failed "
                      "in this process", flush=True)
            return
        for label, budget, seed, needed in passed_over:
            print(f"passed over {label} budget {budget:.3g} seed {seed}: needs about {needed / 60:.0f} min, "
                  "more than is left before --until", flush=True)
        tried.add((todo[0].config_hash, todo[1], todo[2]))
        train(todo)
