"""A catalogue of bad inputs: configs, data trees, command lines, damaged run folders.

Each case writes its files under a fresh folder, runs ``hasten`` in-process
(``hasten.cli.main``) and expects exit status 2, exactly one ``error:``
message containing every ``expect`` string (``{tmp}`` is the folder), and no
Python traceback. ``tests/catalogue/test_catalogue.py`` runs them in CI;
``python tests/catalogue/cases.py`` writes the table of outcomes to
docs/bad-inputs.md.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: a valid tiny run (fails only where a case changes it); tracking off unless a case turns it on
BASE: dict[str, Any] = {
    "run": {"name": "t", "max_steps": 2, "log_every": 1, "run_dir": "{tmp}/run", "output_dir": "{tmp}/runs",
            "progress": False, "threads": 1},
    "data": {"dataset": "procedural", "resolution": 16, "batch_size": 8,
             "options": {"train_size": 32, "val_size": 8}},
    "model": {"name": "small_resnet", "options": {"width": 4}},
    "eval": {"batch_size": 8},
    "tracking": {"enabled": False},
}


def config(**changes: Any) -> str:
    """BASE with ``changes`` merged per section (``section=None`` drops it), as YAML text."""
    data = {k: dict(v) for k, v in BASE.items()}
    for section, values in changes.items():
        if values is None:
            data.pop(section, None)
        elif isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section].update(values)
        else:
            data[section] = values
    return yaml.safe_dump(data, sort_keys=False)


@dataclass
class Case:
    id: str
    kind: str  # config text | config value | command line | run folder | data tree | tracking
    what: str
    expect: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)
    args: list[str] = field(default_factory=lambda: ["train", "{tmp}/c.yaml"])
    setup: Callable[[Path], None] | None = None
    #: files (relative to tmp) that must be byte-identical after the run
    unchanged: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    code: int
    err: str
    seconds: float
    changed: list[str]

    @property
    def message(self) -> str:
        """The error message, with its indented continuation lines (a config's list of errors) joined."""
        lines = self.err.splitlines()
        for index, line in enumerate(lines):
            if line.startswith("error:"):
                rest = [more.strip() for more in lines[index + 1 :] if more.startswith("  ")]
                return " ".join([line, *rest])
        return lines[-1] if lines else ""


# ---------------------------------------------------------------- builders
def png(path: Path, colour: int = 0) -> None:
    import torch
    from torchvision.io import write_png

    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(torch.full((3, 8, 8), colour, dtype=torch.uint8), str(path))


def image_tree(root: Path, *, splits: tuple[str, ...] = ("train", "val"), classes: tuple[str, ...] = ("a", "b"),
               per_class: int = 4) -> None:
    for split in splits:
        for index, name in enumerate(classes):
            for i in range(per_class):
                png(root / split / name / f"{i}.png", 40 * index + i)


def folder_config(**data: Any) -> str:
    return config(data={"dataset": "imagefolder", "path": "{tmp}/images", "resolution": 8, "batch_size": 4,
                        "options": {}, **data})


def run_folder(tmp: Path, name: str = "run", checkpoint: bytes | None = None) -> Path:
    folder = tmp / name
    (folder / "checkpoints").mkdir(parents=True)
    if checkpoint is not None:
        (folder / "checkpoints" / "step-000000004.pt").write_bytes(checkpoint)
    return folder


def torch_bytes(value: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def half_created_store(path: Path) -> None:
    import sqlite3

    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name VARCHAR(256))")
    connection.commit()
    connection.close()


# ---------------------------------------------------------------- the cases
CASES: list[Case] = [
    # -- config files: text
    Case("missing-file", "config text", "config file does not exist", ["nope.yaml", "not found"],
         args=["train", "{tmp}/nope.yaml"]),
    Case("empty-file", "config text", "empty config file", ["c.yaml", "no sections"], {"c.yaml": ""}),
    Case("only-comments", "config text", "a file of comments only", ["c.yaml", "no sections"],
         {"c.yaml": "# run:\n#   max_steps: 3\n"}),
    Case("empty-mapping", "config text", "`{}`", ["c.yaml", "no sections"], {"c.yaml": "{}\n"}),
    Case("top-level-list", "config text", "a list at the top", ["c.yaml", "mapping of sections"],
         {"c.yaml": "- run\n- data\n"}),
    Case("top-level-scalar", "config text", "a scalar at the top", ["c.yaml", "mapping of sections"],
         {"c.yaml": "hello\n"}),
    Case("bad-indent", "config text", "malformed YAML", ["c.yaml", "line", "malformed YAML"],
         {"c.yaml": "run:\n  name: a\n    seed: 1\n"}),
    Case("tab-indent", "config text", "tab used for indentation", ["c.yaml", "malformed YAML"],
         {"c.yaml": "run:\n\tname: a\n"}),
    Case("duplicate-key", "config text", "a key given twice in a section", ["c.yaml:4", "run.max_steps", "twice"],
         {"c.yaml": "run:\n  max_steps: 2\n  name: a\n  max_steps: 5\n"}),
    Case("duplicate-section", "config text", "a section given twice", ["c.yaml:3", "optim", "twice"],
         {"c.yaml": "optim:\n  lr: 0.1\noptim:\n  lr: 0.2\n"}),
    Case("duplicate-nested-key", "config text", "a key twice in data.options",
         ["c.yaml", "data.options.train_size", "twice"],
         {"c.yaml": "data:\n  options:\n    train_size: 32\n    train_size: 64\n"}),
    Case("not-utf8", "config text", "Latin-1 text", ["c.yaml", "line 2", "UTF-8"],
         {"c.yaml": b"run:\n  name: caf\xe9\n"}),
    Case("utf16", "config text", "a UTF-16 file", ["c.yaml", "UTF-16"],
         {"c.yaml": "run:\n  name: a\n".encode("utf-16")}),
    Case("toml-duplicate", "config text", "TOML key given twice", ["c.toml", "twice"],
         {"c.toml": '[run]\nname = "a"\nname = "b"\n'}, args=["train", "{tmp}/c.toml"]),
    Case("toml-malformed", "config text", "malformed TOML", ["c.toml", "malformed TOML"],
         {"c.toml": "[run\nname = 1\n"}, args=["train", "{tmp}/c.toml"]),
    Case("yaml-python-tag", "config text", "a tag that would construct an object", ["c.yaml", "malformed YAML"],
         {"c.yaml": "run: !!python/object/apply:os.system ['true']\n"}),
    # -- config files: values
    Case("unknown-section", "config value", "unknown section", ["trainer", "allowed"],
         {"c.yaml": config(trainer={"lr": 1})}),
    Case("unknown-key", "config value", "a typo in a key", ["optim.lrr", "allowed"],
         {"c.yaml": config(optim={"lrr": 0.1})}),
    Case("wrong-type", "config value", "text for a number", ["run.max_steps", "ten"],
         {"c.yaml": config(run={"max_steps": "ten"})}),
    Case("out-of-range", "config value", "a negative learning rate", ["optim.lr"],
         {"c.yaml": config(optim={"lr": -1})}),
    Case("two-lengths", "config value", "run.max_steps and run.epochs", ["max_steps", "epochs"],
         {"c.yaml": config(run={"epochs": 1})}),
    Case("bad-choice", "config value", "run.device: tpu", ["run.device", "tpu"],
         {"c.yaml": config(run={"device": "tpu"})}),
    Case("unknown-model", "config value", "model name not registered", ["model.name", "resnet99", "allowed"],
         {"c.yaml": config(model={"name": "resnet99", "options": {}})}),
    Case("unknown-task", "config value", "task name not registered", ["task.name", "classify", "allowed"],
         {"c.yaml": config(task={"name": "classify"})}),
    Case("unknown-dataset", "config value", "dataset not registered", ["data.dataset", "cifar100", "allowed"],
         {"c.yaml": config(data={"dataset": "cifar100"})}),
    Case("unknown-schedule", "config value", "schedule not registered", ["schedule.name", "bogus", "allowed"],
         {"c.yaml": config(schedule={"name": "bogus"})}),
    Case("unknown-data-option", "config value", "a typo in data.options", ["train_sizee", "allowed"],
         {"c.yaml": config(data={"options": {"train_sizee": 32}})}),
    Case("unknown-model-option", "config value", "a typo in model.options", ["widht", "allowed"],
         {"c.yaml": config(model={"options": {"widht": 4}})}),
    Case("unknown-task-option", "config value", "a typo in task.options", ["task.options.label_smothing"],
         {"c.yaml": config(task={"options": {"label_smothing": 0.1}})}),
    Case("vit-resolution", "config value", "a resolution the ViT's patch size does not divide",
         ["data.resolution", "multiple of 4"],
         {"c.yaml": config(model={"name": "vit_tiny", "options": {}}, data={"resolution": 18})}),
    Case("unproduced-metric", "config value", "an evaluation metric no task produces",
         ["eval.metric", "val/acc", "allowed", "val/acc1"], {"c.yaml": config(eval={"metric": "val/acc"})}),
    Case("batch-larger-than-data", "config value", "batch size above the training set size", ["data.batch_size"],
         {"c.yaml": config(data={"batch_size": 64})}),
    Case("unknown-plugin", "config value", "a plugin that is not installed", ["plugins", "nosuchplugin"],
         {"c.yaml": config(plugins={"nosuchplugin": {}})}),
    Case("plugins-not-mapping", "config value", "plugins given as a list", ["plugins", "mapping"],
         {"c.yaml": config(plugins=["f1clr"])}),
    # -- tracking
    Case("uri-scheme", "tracking", "a tracking URI scheme no MLflow store serves", ["tracking.uri", "s3", "allowed"],
         {"c.yaml": config(tracking={"enabled": True, "uri": "s3://bucket/mlruns"})}),
    Case("uri-typo", "tracking", "http mistyped", ["tracking.uri", "htp", "allowed"],
         {"c.yaml": config(tracking={"enabled": True, "uri": "htp://127.0.0.1:5000"})}),
    Case("sqlite-two-slashes", "tracking", "sqlite:// without the third slash", ["tracking.uri", "three slashes"],
         {"c.yaml": config(tracking={"enabled": True, "uri": "sqlite://mlruns.db"})}),
    Case("store-not-sqlite", "tracking", "the store file is not a database", ["broken.db", "broken", "hasten sync"],
         {"c.yaml": config(tracking={"enabled": True, "uri": "sqlite:///{tmp}/broken.db"}),
          "broken.db": b"this is not a database" * 50}, unchanged=["broken.db"]),
    Case("store-half-created", "tracking", "a store whose creation was interrupted",
         ["half.db", "missing", "hasten sync"],
         {"c.yaml": config(tracking={"enabled": True, "uri": "sqlite:///{tmp}/half.db"})},
         setup=lambda tmp: half_created_store(tmp / "half.db"), unchanged=["half.db"]),
    # -- command line
    Case("set-no-equals", "command line", "--set without '='", ["--set", "KEY.PATH=VALUE"],
         {"c.yaml": config()}, args=["train", "{tmp}/c.yaml", "--set", "optim.lr"]),
    Case("set-through-value", "command line", "--set into a value, not a section", ["run.name", "not a section"],
         {"c.yaml": config()}, args=["train", "{tmp}/c.yaml", "--set", "run.name.x=1"]),
    Case("set-unknown-key", "command line", "--set of a key that does not exist", ["optim.lrr"],
         {"c.yaml": config()}, args=["train", "{tmp}/c.yaml", "--set", "optim.lrr=1"]),
    Case("set-bad-value", "command line", "--set of a value of the wrong type", ["data.batch_size"],
         {"c.yaml": config()}, args=["train", "{tmp}/c.yaml", "--set", "data.batch_size=many"]),
    Case("resume-missing", "command line", "--resume of a mistyped run folder",
         ["{tmp}/runs/t-20261201-1", "does not exist", "{tmp}/runs/t-20261201-2"], {"c.yaml": config()},
         args=["train", "{tmp}/c.yaml", "--resume", "{tmp}/runs/t-20261201-1"],
         setup=lambda tmp: (run_folder(tmp, "runs/t-20261201-2"), None)[1]),
    Case("resume-not-a-run", "command line", "--resume of a folder no run wrote", ["{tmp}/stuff", "not a run folder"],
         {"c.yaml": config(), "stuff/notes.txt": "x"}, args=["train", "{tmp}/c.yaml", "--resume", "{tmp}/stuff"]),
    Case("resume-no-runs", "command line", "--resume with no earlier run of this name", ["--resume", "no earlier run"],
         {"c.yaml": config(run={"run_dir": None})}, args=["train", "{tmp}/c.yaml", "--resume"]),
    # -- damaged run folders
    Case("truncated-checkpoint", "run folder", "--resume whose only checkpoint is truncated",
         ["step-000000004.pt", "can be read", "nothing was changed"], {"c.yaml": config()},
         args=["train", "{tmp}/c.yaml", "--resume", "{tmp}/run"],
         setup=lambda tmp: (run_folder(tmp, checkpoint=torch_bytes({"step": 4, "model": {}})[:60]), None)[1],
         unchanged=["run/checkpoints/step-000000004.pt"]),
    Case("garbage-checkpoint", "run folder", "--resume whose only checkpoint is not a torch file",
         ["step-000000004.pt", "can be read"], {"c.yaml": config()},
         args=["train", "{tmp}/c.yaml", "--resume", "{tmp}/run"],
         setup=lambda tmp: (run_folder(tmp, checkpoint=b"\x00garbage" * 100), None)[1],
         unchanged=["run/checkpoints/step-000000004.pt"]),
    Case("foreign-checkpoint", "run folder", "--resume whose checkpoint is not a hasten checkpoint",
         ["step-000000004.pt", "not a hasten checkpoint"], {"c.yaml": config()},
         args=["train", "{tmp}/c.yaml", "--resume", "{tmp}/run"],
         setup=lambda tmp: (run_folder(tmp, checkpoint=torch_bytes({"weights": [1, 2]})), None)[1],
         unchanged=["run/checkpoints/step-000000004.pt"]),
    Case("fresh-run-over-checkpoints", "run folder", "a new run into a folder holding checkpoints",
         ["{tmp}/run", "already holds checkpoints", "--resume"], {"c.yaml": config()},
         setup=lambda tmp: (run_folder(tmp, checkpoint=b"x"), None)[1],
         unchanged=["run/checkpoints/step-000000004.pt"]),
    # -- data trees
    Case("data-path-missing", "data tree", "data.path does not exist", ["{tmp}/images", "does not exist"],
         {"c.yaml": folder_config()}),
    Case("data-path-unset", "data tree", "imagefolder without data.path", ["data.path"],
         {"c.yaml": folder_config(path=None)}),
    Case("split-missing", "data tree", "no val split", ["{tmp}/images/val", "not found"],
         {"c.yaml": folder_config()}, setup=lambda tmp: image_tree(tmp / "images", splits=("train",))),
    Case("class-without-images", "data tree", "a class folder with no image",
         ["{tmp}/images/train/c", "no .jpg/.jpeg/.png image"], {"c.yaml": folder_config(),
                                                                 "images/train/c/readme.txt": "x"},
         setup=lambda tmp: image_tree(tmp / "images")),
    Case("no-class-folders", "data tree", "images directly in train/", ["{tmp}/images/train", "no class directories"],
         {"c.yaml": folder_config()},
         setup=lambda tmp: (png(tmp / "images/train/0.png"), png(tmp / "images/val/a/0.png"), None)[2]),
    Case("val-class-unknown", "data tree", "a val class that train does not have",
         ["{tmp}/images/val/z", "not among the train classes"], {"c.yaml": folder_config()},
         setup=lambda tmp: (image_tree(tmp / "images"), png(tmp / "images/val/z/0.png"), None)[2]),
    Case("corrupt-image-workers", "data tree", "a corrupt image read in a DataLoader worker",
         ["{tmp}/images/train/a/0.png", "cannot read image"],
         {"c.yaml": folder_config(num_workers=1, batch_size=8)},
         setup=lambda tmp: (image_tree(tmp / "images", per_class=4),
                            (tmp / "images/train/a/0.png").write_bytes(b"\x89PNG broken"), None)[2]),
    Case("cifar-missing-batch", "data tree", "a CIFAR-10 batch file missing", ["data_batch_1", "missing"],
         {"c.yaml": config(data={"dataset": "cifar10", "path": "{tmp}/cifar", "options": {}}),
          "cifar/cifar-10-batches-py/readme.txt": "x"}),
    Case("idx-bad-magic", "data tree", "an IDX file with a bad header", ["train-images-idx3-ubyte", "magic"],
         {"c.yaml": config(data={"dataset": "idx", "path": "{tmp}/mnist", "options": {}}),
          "mnist/train-images-idx3-ubyte": b"\x01\x02\x03\x04" * 10, "mnist/train-labels-idx1-ubyte": b"\x00" * 8}),
    Case("npz-not-a-zip", "data tree", "an .npz file that is not one", ["{tmp}/d.npz"],
         {"c.yaml": config(data={"dataset": "npz", "path": "{tmp}/d.npz", "options": {}}), "d.npz": b"nope"}),
]


def fill(text: str, tmp: Path) -> str:
    return text.replace("{tmp}", str(tmp))


def prepare(case: Case, tmp: Path) -> dict[str, bytes]:
    """Write the case's files; return the content of the files that must stay unchanged."""
    tmp.mkdir(parents=True, exist_ok=True)
    for name, content in case.files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(fill(content, tmp), encoding="utf-8")
    if case.setup is not None:
        case.setup(tmp)
    return {name: (tmp / name).read_bytes() for name in case.unchanged}


def run_case(case: Case, tmp: Path) -> Outcome:
    """Run one case in-process; a traceback escaping ``main`` is recorded in the output, not raised."""
    from hasten.cli import main

    before = prepare(case, tmp)
    err, out = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main([fill(a, tmp) for a in case.args])
        except SystemExit as exc:
            code = int(exc.code or 0)
        except BaseException:
            traceback.print_exc()
            code = -1
    seconds = time.perf_counter() - started
    changed = [name for name, content in before.items()
               if not (tmp / name).is_file() or (tmp / name).read_bytes() != content]
    return Outcome(code, err.getvalue(), seconds, changed)


def problems(case: Case, outcome: Outcome, tmp: Path) -> list[str]:
    """What the outcome gets wrong (empty: the case passes)."""
    found = []
    if outcome.code != 2:
        found.append(f"exit {outcome.code}, expected 2")
    if "Traceback" in outcome.err:
        found.append("a traceback was printed")
    errors = [line for line in outcome.err.splitlines() if line.startswith("error:")]
    if len(errors) != 1:
        found.append(f"{len(errors)} 'error:' messages, expected 1")
    for wanted in case.expect:
        if fill(wanted, tmp) not in outcome.err:
            found.append(f"message lacks {fill(wanted, tmp)!r}")
    found += [f"{name} was changed" for name in outcome.changed]
    return found


def table(rows: list[tuple[Case, Outcome, list[str]]], tmp_root: Path | None = None) -> str:
    """A markdown table of the outcomes (the catalogue's folder shown as TMP)."""
    lines = ["| case | kind | bad input | exit | seconds | message | ok |", "|---|---|---|---|---|---|---|"]
    for case, outcome, bad in rows:
        message = outcome.message
        if tmp_root is not None:
            message = message.replace(str(tmp_root), "TMP")
        message = message.replace("|", "\\|")
        lines.append(f"| {case.id} | {case.kind} | {case.what} | {outcome.code} | {outcome.seconds:.2f} | "
                     f"`{message}` | {'yes' if not bad else 'NO: ' + '; '.join(bad)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    """Write docs/bad-inputs.md from a run of every case."""
    import tempfile

    repo = Path(__file__).resolve().parents[2]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for case in CASES:
            tmp = root / case.id
            outcome = run_case(case, tmp)
            rows.append((case, outcome, problems(case, outcome, tmp)))
        text = table(rows, root)
    header = (
        "# Bad inputs and what hasten answers\n\n"
        "Generated by `python tests/catalogue/cases.py` (the same cases run in CI: "
        "`tests/catalogue/test_catalogue.py`). Every case exits 2 with one message naming the key path or "
        "file, without a traceback; `TMP` is the case's folder. See docs/robustness.md for the promises.\n\n"
    )
    (repo / "docs" / "bad-inputs.md").write_text(header + text, encoding="utf-8")
    failed = sum(1 for *_, bad in rows if bad)
    print(f"{len(rows)} cases, {failed} failed; wrote docs/bad-inputs.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "core"))
    sys.exit(main())
