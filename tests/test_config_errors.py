"""Bad configs exit 2 with a message naming the key or file (one test per case)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hasten.cli import main


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


def test_unknown_plugin_lists_installed_and_install_hint(tmp_path, capsys):
    code, err = run_cli(["train", write(tmp_path, "plugins:\n  warp_speed: {}\n")], capsys)
    assert code == 2
    assert "plugins.warp_speed" in err and "pip install hasten-warp_speed" in err and "installed:" in err


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
