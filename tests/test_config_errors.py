"""Bad configs exit 2 with a message naming the key or file (one test per case)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from hasten.cli import main
from hasten.config import Config, _section_model, validate_config
from hasten.errors import UserError
from hasten.plugins import PUBLISHED_PLUGINS, Plugin, unknown_plugin_message
from hasten.testing import plugin_available, tiny_config_dict


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_unknown_key_names_the_path_and_allowed_keys(tmp_path, capsys):
    code, err = run_cli(["train", write(tmp_path, "optim:\n  lrr: 0.1\n")], capsys)
    assert code == 2
    assert "optim.lrr" in err and "allowed" in err and "lr" in err
    assert "Traceback" not in err


def test_wrong_type_names_key_and_value(tmp_path, capsys):
    code, err = run_cli(["train", write(tmp_path, "data:\n  batch_size: many\n")], capsys)
    assert code == 2
    assert "data.batch_size" in err and "'many'" in err


def test_out_of_range_value(tmp_path, capsys):
    code, err = run_cli(["train", write(tmp_path, "optim:\n  lr: -1\n")], capsys)
    assert code == 2
    assert "optim.lr" in err and "greater than 0" in err and "-1" in err


def test_unknown_plugin_lists_installed_and_offers_no_install_of_the_typo(tmp_path, capsys):
    code, err = run_cli(["train", write(tmp_path, "plugins:\n  warp_speed: {}\n")], capsys)
    assert code == 2
    assert "plugins.warp_speed" in err and "installed:" in err
    assert "pip install" not in err  # `pip install hasten-warp_speed` would invite a typo-squatted package


def test_missing_data_path_names_the_path(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    text = f"data:\n  dataset: imagefolder\n  path: {missing}\ntracking:\n  enabled: false\n"
    code, err = run_cli(["train", write(tmp_path, text)], capsys)
    assert code == 2
    assert str(missing) in err


def test_malformed_yaml_names_file_and_line(tmp_path, capsys):
    path = write(tmp_path, "run:\n  seed: [1, 2\n")
    code, err = run_cli(["train", path], capsys)
    assert code == 2
    assert path in err and "line" in err and "malformed YAML" in err


def test_yaml_tag_that_would_construct_an_object_is_refused(tmp_path, capsys):
    path = write(tmp_path, "run: !!python/object/apply:os.system ['echo pwned']\n")
    code, err = run_cli(["train", path], capsys)
    assert code == 2
    assert "malformed YAML" in err


def test_missing_config_file(tmp_path, capsys):
    code, err = run_cli(["train", str(tmp_path / "absent.yaml")], capsys)
    assert code == 2 and "absent.yaml" in err and "not found" in err


def test_bad_override_syntax(tmp_path, capsys):
    code, err = run_cli(["train", write(tmp_path, "run: {}\n"), "--set", "optim.lr"], capsys)
    assert code == 2 and "KEY.PATH=VALUE" in err


def test_unknown_model_lists_allowed(tmp_path, capsys):
    text = "model:\n  name: resnet9000\ntracking:\n  enabled: false\nrun:\n  max_steps: 1\n"
    code, err = run_cli(["train", write(tmp_path, text)], capsys)
    assert code == 2 and "resnet9000" in err and "small_resnet" in err


def test_cli_process_exit_code_and_no_traceback(tmp_path):
    path = write(tmp_path, "optim:\n  momentum: 2\n")
    proc = subprocess.run([sys.executable, "-m", "hasten", "train", path], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "optim.momentum" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------- unknown keys: where and what instead
def _sections() -> list[tuple[str, type[BaseModel]]]:
    """Every config section model, by dotted path (nested sections included)."""
    found: list[tuple[str, type[BaseModel]]] = []

    def walk(prefix: str, model: type[BaseModel]) -> None:
        for name, field in model.model_fields.items():
            sub = _section_model(field.annotation)
            if sub is not None:
                path = f"{prefix}.{name}" if prefix else name
                found.append((path, sub))
                walk(path, sub)

    walk("", Config)
    return found


def _typo(key: str) -> str:
    return key[:-1] + key[-1] * 2  # "lr" -> "lrr"


@pytest.mark.parametrize("path,model", _sections(), ids=[p for p, _ in _sections()])
def test_typo_in_every_section_lists_that_sections_keys_and_suggests_the_key(path, model):
    key = next(k for k in model.model_fields if len(k) > 2)
    data: dict = {}
    node = data
    for part in path.split("."):
        node = node.setdefault(part, {})
    node[_typo(key)] = 1
    with pytest.raises(UserError) as info:
        validate_config(data)
    message = str(info.value)
    assert f"{path}.{_typo(key)}: unknown key in {path} (did you mean {key!r}?)" in message
    assert f"allowed: {', '.join(sorted(model.model_fields))}" in message


def test_top_level_typo_suggests_the_section():
    with pytest.raises(UserError, match=r"optimm: unknown key \(did you mean 'optim'\?\); allowed: data, eval"):
        validate_config({"optimm": {}})


class _Nested(BaseModel):
    model_config = ConfigDict(extra="forbid")
    window: int = 3


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_lr: float = 1.0
    min_lr: float = 0.1
    inner: _Nested = Field(default_factory=_Nested)


class _TypoPlugin(Plugin):
    name = "typo_probe"
    Settings = _Settings


def test_typo_in_plugin_settings_lists_the_plugins_keys(tmp_path):
    from hasten.engine import Trainer

    with plugin_available(_TypoPlugin):
        config = validate_config(tiny_config_dict(tmp_path, plugins={"typo_probe": {"maxlr": 2.0}}))
        with pytest.raises(UserError) as info:
            Trainer(config)
        nested = validate_config(tiny_config_dict(tmp_path, plugins={"typo_probe": {"inner": {"windw": 2}}}))
        with pytest.raises(UserError) as nested_info:
            Trainer(nested)
    assert str(info.value) == (
        "invalid config:\n  plugins.typo_probe.maxlr: unknown key in plugins.typo_probe "
        "(did you mean 'max_lr'?); allowed: inner, max_lr, min_lr"
    )
    assert "plugins.typo_probe.inner.windw: unknown key in plugins.typo_probe.inner (did you mean 'window'?); " \
        "allowed: window" in str(nested_info.value)


def test_plugin_name_typo_suggests_the_installed_plugin(tmp_path):
    from hasten.engine import Trainer

    with plugin_available(_TypoPlugin):
        config = validate_config(tiny_config_dict(tmp_path, plugins={"typo_prob": {}}))
        with pytest.raises(UserError) as info:
            Trainer(config)
    message = str(info.value)
    assert "plugins.typo_prob: no plugin named 'typo_prob' is installed (did you mean 'typo_probe'?)" in message
    assert "pip install" not in message


@pytest.mark.parametrize("name", sorted(PUBLISHED_PLUGINS))
def test_install_hint_only_names_a_published_plugin(name):
    assert f"`pip install hasten-{name}`" in unknown_plugin_message(name, {})
    typo = _typo(name)
    message = unknown_plugin_message(typo, {})
    assert f"(did you mean {name!r}? install it with `pip install hasten-{name}`)" in message
    assert f"hasten-{typo}" not in message
    assert "pip install" not in unknown_plugin_message("warp_speed", {})


def test_task_option_typo_lists_the_tasks_options(tmp_path):
    # refused when the config is validated, before any Trainer is built
    with pytest.raises(UserError, match=r"task\.options\.metod: unknown key in task\.options "
                       r"\(did you mean 'method'\?\); allowed: .*method"):
        validate_config(tiny_config_dict(tmp_path, task={"name": "ssl", "options": {"metod": "simsiam"}}))


@pytest.mark.parametrize(
    "section,value,suggestion",
    [("model", "small_resnt", "small_resnet"), ("task", "clasification", "classification"),
     ("schedule", "cosin", "cosine"), ("data", "procedurl", "procedural")],
)
def test_unknown_component_name_suggests_the_registered_one(tmp_path, section, value, suggestion):
    from hasten.engine import Trainer

    field = "dataset" if section == "data" else "name"
    config = validate_config(tiny_config_dict(tmp_path, **{section: {field: value}}))
    with pytest.raises(UserError, match=rf"{value!r} \(did you mean {suggestion!r}\?\)"):
        Trainer(config)


def test_unknown_model_option_suggests_the_option(tmp_path):
    with pytest.raises(UserError, match=r"model\.options\.widht: unknown key in model\.options "
                       r"\(did you mean 'width'\?\); allowed: blocks, stem_stride, width"):
        validate_config(tiny_config_dict(tmp_path, model={"options": {"widht": 8}}))
