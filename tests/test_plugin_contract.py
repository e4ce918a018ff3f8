"""The plugin contract: hook names and signatures enforced, the call order pinned, the import boundaries."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

import hasten
from hasten.engine import Trainer
from hasten.errors import UserError
from hasten.plugins import installed_plugins, register_plugin, unregister_plugin

REPO = Path(__file__).resolve().parents[1]


class Recorder(hasten.Plugin):
    """Records, in a list shared by every instance, which plugin ran which hook."""

    name = "recorder_a"
    calls: ClassVar[list[tuple[str, str]]] = []

    @hasten.hookimpl
    def hasten_setup(self, state: hasten.State) -> None:
        self.calls.append(("setup", self.name))
        state.scratch.setdefault("warmup_seen", {})[self.name] = state.warmup_steps

    @hasten.hookimpl
    def hasten_step_start(self, state: hasten.State) -> None:
        self.calls.append(("step_start", self.name))
        state.scratch.setdefault("lr_seen", {})[self.name] = state.lr

    @hasten.hookimpl
    def hasten_fit_end(self, state: hasten.State) -> None:
        self.calls.append(("fit_end", self.name))


class RecorderB(Recorder):
    name = "recorder_b"


@pytest.fixture
def recorders():
    register_plugin(Recorder)
    register_plugin(RecorderB)
    Recorder.calls.clear()
    yield
    unregister_plugin(Recorder.name)
    unregister_plugin(RecorderB.name)


def call_order(trainer: Trainer, hook: str) -> list[str]:
    """The implementations of ``hook`` in the order pluggy calls them (it walks its list from the end)."""
    return [impl.plugin_name for impl in reversed(getattr(trainer.hooks, hook).get_hookimpls())]


def test_call_order_of_builtins_and_plugins_is_pinned(tiny_config: Any, recorders: None) -> None:
    config = tiny_config(
        plugins={"recorder_b": {}, "recorder_a": {}},
        schedule={"name": "warmup_cosine", "warmup_steps": 2},
        run={"max_steps": 4},
    )
    trainer = Trainer(config)
    try:
        # tryfirst built-ins (task set-up, then the schedule publishing state.warmup_steps), then the plugins
        # in config order; tracking is off here (it runs after the plugins when on)
        assert call_order(trainer, "hasten_setup") == [
            "builtin:Defaults", "builtin:Schedule", "recorder_b", "recorder_a",
        ]
        assert call_order(trainer, "hasten_step_start") == ["builtin:Schedule", "recorder_b", "recorder_a"]
        # the run record writes summary.json first (tryfirst: it exists when tracking logs artifacts);
        # the end-of-run summary is trylast: after every plugin
        assert call_order(trainer, "hasten_fit_end") == [
            "builtin:RunRecord", "recorder_b", "recorder_a", "builtin:Progress",
        ]
        # every plugin's set-up already sees the schedule's warm-up (it used to run after them)
        assert trainer.state.scratch["warmup_seen"] == {"recorder_a": 2, "recorder_b": 2}
        trainer.fit()
    finally:
        trainer.close()
    steps = [who for hook, who in Recorder.calls if hook == "step_start"]
    assert steps == ["recorder_b", "recorder_a"] * 4
    assert [c for c in Recorder.calls if c[0] == "fit_end"] == [("fit_end", "recorder_b"), ("fit_end", "recorder_a")]
    # the schedule set state.lr before the plugins saw it: the last step's warm-up-cosine value, not optim.lr
    assert 0 < trainer.state.scratch["lr_seen"]["recorder_a"] < 0.05


def test_tryfirst_plugin_setup_runs_before_the_builtins(tiny_config: Any, recorders: None) -> None:
    class Publisher(hasten.Plugin):
        name = "publisher"

        @hasten.hookimpl(tryfirst=True)
        def hasten_setup(self, state: hasten.State) -> None:
            Recorder.calls.append(("setup", self.name))

    register_plugin(Publisher)
    try:
        trainer = Trainer(tiny_config(plugins={"recorder_a": {}, "publisher": {}}))
        trainer.close()
    finally:
        unregister_plugin(Publisher.name)
    assert call_order(trainer, "hasten_setup") == [
        "publisher", "builtin:Defaults", "builtin:Schedule", "recorder_a",
    ]


class Misspelled(hasten.Plugin):
    name = "misspelled"

    @hasten.hookimpl
    def hasten_step_begin(self, state: hasten.State) -> None:
        pass


class WrongArguments(hasten.Plugin):
    name = "wrong_arguments"

    @hasten.hookimpl
    def hasten_step_end(self, state: hasten.State, outputs: Any) -> None:
        pass


class Unmarked(hasten.Plugin):
    name = "unmarked"

    def hasten_setup(self, state: hasten.State) -> None:
        pass


@pytest.mark.parametrize(
    ("plugin_class", "expected"),
    [
        (Misspelled, "plugins.misspelled: plugin 'misspelled' (distribution hasten-misspelled): "
                     "hasten_step_begin matches no hook specification"),
        (WrongArguments, "plugins.wrong_arguments: plugin 'wrong_arguments' (distribution hasten-wrong_arguments): "
                         "hasten_step_end takes arguments its specification does not have ('outputs'); "
                         "allowed: state, output"),
        (Unmarked, "plugins.unmarked: plugin 'unmarked' (distribution hasten-unmarked): "
                   "hasten_setup is not marked @hasten.hookimpl"),
    ],
)
def test_bad_hook_is_refused_when_plugins_load(tiny_config: Any, plugin_class: type, expected: str) -> None:
    register_plugin(plugin_class, distribution=f"hasten-{plugin_class.name}")
    try:
        with pytest.raises(UserError) as caught:
            Trainer(tiny_config(plugins={plugin_class.name: {}}))
        # listing never shows a name that is no hook
        info = installed_plugins()[plugin_class.name]
    finally:
        unregister_plugin(plugin_class.name)
    assert str(caught.value).startswith(expected), str(caught.value)
    assert "hasten_step_begin" not in info.hooks
    assert not list((Path(tiny_config().run.run_dir).parent).glob("run*/checkpoints"))  # refused before any work


def test_hook_trace_switch(tmp_path: Path) -> None:
    """HASTEN_TRACE_HOOKS=1 prints every hook call with its implementations in call order; off by default."""
    script = (
        "import sys; from hasten.config import validate_config; from hasten.engine import Trainer;"
        "from hasten.testing import tiny_config_dict;"
        f"t = Trainer(validate_config(tiny_config_dict(__import__('pathlib').Path({str(tmp_path)!r}), "
        "run={'max_steps': 2}))); t.fit()"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "core"), "OMP_NUM_THREADS": "1"}
    traced = subprocess.run([sys.executable, "-c", script], env={**env, "HASTEN_TRACE_HOOKS": "1"},
                            capture_output=True, text=True, timeout=120, check=True)
    lines = [line for line in traced.stderr.splitlines() if line.startswith("hook ")]
    assert "hook hasten_setup step 0: builtin:Defaults > builtin:Schedule" in lines
    assert "hook hasten_step_start step 1: builtin:Schedule" in lines
    assert sum(line.startswith("hook hasten_step_end") for line in lines) == 2
    (tmp_path / "run").rename(tmp_path / "first")
    quiet = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                           check=True)
    assert not [line for line in quiet.stderr.splitlines() if line.startswith("hook ")]


# ------------------------------------------------------------------ import boundaries
def hasten_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of a hasten module in ``path`` (``from hasten.x import y`` -> hasten.x)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "hasten"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "hasten":
                found.append((node.lineno, node.module))
    return found


def test_data_layer_knows_no_task_plugin_or_state() -> None:
    """core/hasten/data/ decodes, samples and augments: it imports no task, built-in plugin or run state."""
    forbidden = ("hasten.tasks", "hasten.builtins", "hasten.state", "hasten.engine", "hasten.plugins")
    files = sorted((REPO / "core" / "hasten" / "data").glob("*.py"))
    assert len(files) >= 9
    offenders = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in files
        for line, module in hasten_imports(path)
        if module == "hasten" or module.startswith(forbidden)
    ]
    assert offenders == []


def test_plugins_use_only_the_declared_api() -> None:
    """Every plugin file imports from hasten only ``hasten.api`` (or uses top-level names that it declares)."""
    import hasten.api

    declared = set(hasten.api.__all__)
    files = sorted((REPO / "plugins").glob("*/hasten_*/*.py"))
    assert len({path.parts[-3] for path in files}) == 6
    offenders = []
    for path in files:
        where = path.relative_to(REPO)
        offenders += [f"{where}:{line} imports {module}" for line, module in hasten_imports(path)
                      if module not in ("hasten", "hasten.api")]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "hasten":
                offenders += [f"{where}:{node.lineno} imports hasten.{a.name}" for a in node.names
                              if a.name not in declared]
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "hasten":
                if node.attr not in declared:
                    offenders.append(f"{where}:{node.lineno} uses hasten.{node.attr}")
    assert offenders == []
