"""``python -m hasten`` (also what torchrun runs: ``torchrun ... -m hasten train``)."""

from hasten.cli import main

raise SystemExit(main())
