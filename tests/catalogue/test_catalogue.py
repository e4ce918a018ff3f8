"""The bad-input catalogue (tests/catalogue/cases.py): every case exits 2 with one clear message.

Run with ``-s`` to see the table of outcomes; it is also written to the
session's temporary folder (``bad-inputs.md``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cases import CASES, Case, problems, run_case, table

ROWS: list = []


@pytest.fixture(scope="module", autouse=True)
def outcome_table(tmp_path_factory):
    yield
    folder = tmp_path_factory.getbasetemp()
    text = table(ROWS, folder)
    (folder / "bad-inputs.md").write_text(text, encoding="utf-8")
    print(f"\n\nbad-input catalogue ({len(ROWS)} cases, table in {folder / 'bad-inputs.md'}):\n{text}")


def test_catalogue_has_at_least_40_cases():
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    outcome = run_case(case, tmp_path)
    bad = problems(case, outcome, tmp_path)
    ROWS.append((case, outcome, bad))
    assert not bad, f"{case.id}: {bad}\n{outcome.err}"
