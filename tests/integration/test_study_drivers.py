"""The SSL and UBN studies' queue drivers (benchmarks/study_queue.py) do what the study does after a run at once:
the linear probe and the UBN diagnostics read the run's final checkpoint, which goes away with the machine at a
session's end, so a queued run is probed or diagnosed right after it trains. Real runs at the --quick sizes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hasten.commands import sweep

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import common  # noqa: E402  (benchmarks/ is not a package)
import ssl_frontier  # noqa: E402
import ubn_long  # noqa: E402


@pytest.fixture
def smoke(tmp_path: Path, monkeypatch) -> Path:
    """--quick writes under benchmarks/results/smoke/: here under tmp_path instead."""
    for module in (common, ssl_frontier, ubn_long):
        monkeypatch.setattr(module, "SMOKE_DIR", tmp_path)
    return tmp_path


def run(monkeypatch, script, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", [f"{script.__name__}.py", "--quick", *args])
    return script.main()


def test_a_queued_ssl_run_gets_its_linear_probe_as_soon_as_it_finishes(smoke: Path, monkeypatch) -> None:
    pytest.importorskip("hasten_f1clr", reason="the SSL study's plugins are installed in the tox env `all`")
    queue = smoke / "queue.txt"
    queue.write_text("# one run\nsimsiam cosine|1|0\n", encoding="utf-8")
    assert run(monkeypatch, ssl_frontier, "--dataset", "embedded", "--queue", str(queue)) == 0
    out = smoke / "ssl_frontier" / "embedded"
    records = sweep.read_records(out)
    assert [(r.label, r.budget, r.seed, r.steps) for r in records] == [("simsiam cosine", 1.0, 0, 20)]
    entry = next(e for e in ssl_frontier.entries_for("embedded", out, True, 1).values() if e.label == "simsiam cosine")
    probe = json.loads(ssl_frontier.probe_path(out, entry, 1.0, 0).read_text(encoding="utf-8"))
    assert probe["run_hash"] == records[0].run_hash and probe["linear_probe.epochs"] == 3
    assert 0.0 <= probe["linear_probe/acc1"] <= 1.0


def test_a_queued_ubn_run_gets_its_diagnostics_as_soon_as_it_finishes(smoke: Path, monkeypatch) -> None:
    pytest.importorskip("hasten_ubn", reason="plugins/ubn is installed in the tox env `all`")
    queue = smoke / "queue.txt"
    queue.write_text("sgd 25% UBN joint|1|0\n", encoding="utf-8")
    assert run(monkeypatch, ubn_long, "--dataset", "depth", "--queue", str(queue)) == 0
    out = smoke / "ubn_long" / "depth"
    records = sweep.read_records(out)
    assert [(r.label, r.budget, r.seed, r.steps) for r in records] == [("sgd 25% UBN joint", 1.0, 0, 24)]
    entry = ubn_long.entries_for("depth", out, True, 1)[("sgd", 0.25, "joint")]
    diagnostics = json.loads(ubn_long.diagnostics_path(out, entry, 0).read_text(encoding="utf-8"))
    assert diagnostics["label"] == "sgd 25% UBN joint" and diagnostics["mc_bn"] is None  # MC-BN: classification
    assert len(diagnostics["distances"]) >= 4  # one row per BatchNorm layer of dispnet's 4 stages at least
