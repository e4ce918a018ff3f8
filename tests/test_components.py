"""Typed components: option models, their errors, the discriminated schema, `hasten components`,
and what every run leaves in its run directory."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch
import yaml
from pydantic import Field

import hasten
from hasten.cli import main
from hasten.commands.schema import config_schema
from hasten.config import validate_config
from hasten.data.datasets import TensorImageDataset
from hasten.engine import Trainer, train
from hasten.registry import REGISTRY, Options, Registry
from hasten.testing import plugin_available, tiny_config_dict


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_config(tmp_path: Path, **sections: Any) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(tmp_path, **sections)))
    return str(path)


# ---- errors: full key path and the allowed keys, exit 2, before any work ------------------------

@pytest.mark.parametrize(
    ("sections", "path", "allowed"),
    [
        ({"data": {"options": {"train_sizee": 10}}}, "data.options.train_sizee",
         "colours, difficulty, train_size, unlabeled_size, val_size"),
        ({"model": {"name": "small_resnet", "options": {"wdith": 8}}}, "model.options.wdith",
         "blocks, stem_stride, width"),
        ({"task": {"name": "classification", "options": {"label_smothing": 0.1}}}, "task.options.label_smothing",
         "label_smoothing"),
        ({"task": {"name": "ssl", "options": {"methd": "byol"}}}, "task.options.methd",
         "center_momentum, head_batchnorm, knn_bank_size, knn_k, knn_temperature, method, out_dim"),
    ],
)
def test_unknown_option_exits_2_naming_the_key_path_and_the_allowed_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sections: dict[str, Any], path: str, allowed: str
) -> None:
    code, _, err = run_cli(["train", write_config(tmp_path, **sections)], capsys)
    assert code == 2
    assert f"{path}: unknown key" in err and f"allowed: {allowed}" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused at config load: no run directory


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"data": {"options": {"train_size": "many"}}}, "data.options.train_size: Input should be a valid integer"),
        ({"data": {"options": {"colours": "grey"}}}, "data.options.colours: Input should be 'random' or 'fixed'"),
        ({"model": {"name": "vit_tiny", "options": {"depth": 0}}}, "model.options.depth: Input should be greater"),
        ({"task": {"name": "ssl", "options": {"method": "swav"}}},
         "task.options.method: Input should be 'simsiam', 'byol', 'simclr', 'mocov2plus' or 'dino' (got 'swav')"),
        ({"task": {"name": "ssl", "options": {"method": "simsiam", "temperature": 0.5}}},
         "task.options.temperature: not used by method 'simsiam'"),
        ({"data": {"dataset": "procedural", "skip_corrupt": True}}, "data.skip_corrupt: dataset 'procedural'"),
    ],
)
def test_mistyped_option_value_exits_2_naming_key_and_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sections: dict[str, Any], expected: str
) -> None:
    code, _, err = run_cli(["train", write_config(tmp_path, **sections)], capsys)
    assert code == 2 and expected in err and "Traceback" not in err


def test_components_receive_their_validated_options() -> None:
    dataset = REGISTRY.datasets.get("procedural")(split="val", resolution=8, seed=0, val_size=12)
    assert len(dataset) == 12 and dataset.difficulty == 1.0  # the default filled in
    model = hasten.models.build_model("mlp", num_classes=3, in_channels=5, options={"hidden": [7]})
    assert [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)] == [7, 3]


def test_every_core_component_declares_described_options_with_defaults() -> None:
    for kind, catalog in REGISTRY.catalogs().items():
        if kind in ("schedules", "optimizers"):  # no options of their own: their config section's apply
            continue
        for component in catalog.components():
            assert component.options is not None, f"{kind} {component.name}"
            assert component.options.model_config.get("extra") == "forbid", component.name
            for name, field in component.options.model_fields.items():
                assert not field.is_required(), f"{component.name}.{name} has no default"
                assert field.description, f"{component.name}.{name} has no description"
            component.options()  # the defaults validate


# ---- a plugin's dataset with typed options -------------------------------------------------------

class NoiseOptions(Options):
    size: int = Field(64, ge=16, description="samples per split")
    channels: typing.Literal[1, 3] = Field(3, description="image channels")


def build_noise(*, split: str, resolution: int, seed: int, path: str | None, options: NoiseOptions):
    """Uniform noise images, 2 classes (a test dataset)."""
    generator = torch.Generator().manual_seed(seed + (split == "val"))
    images = torch.randint(0, 256, (options.size, options.channels, resolution, resolution), generator=generator)
    labels = torch.arange(options.size) % 2
    return TensorImageDataset(images.to(torch.uint8), labels, num_classes=2, mean=(0.5,) * options.channels,
                              std=(0.3,) * options.channels)


class NoisePlugin(hasten.Plugin):
    """Registers the dataset noise_test."""

    name = "noise_data"

    @hasten.hookimpl
    def hasten_register(self, registry: Registry) -> None:
        registry.datasets.add("noise_test", build_noise, options=NoiseOptions, replace=True)


def test_plugin_dataset_options_are_validated_and_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = {"noise_data": {}}
    with plugin_available(NoisePlugin):
        # Config load cannot know the plugin's dataset yet; the run checks it once plugins registered.
        config = validate_config(tiny_config_dict(
            tmp_path, data={"dataset": "noise_test", "options": {"sise": 32}}, plugins=plugin))
        with pytest.raises(hasten.UserError) as error:
            Trainer(config)
        assert ("data.options.sise: unknown key in data.options (did you mean 'size'?); allowed: channels, size"
                in str(error.value))
        assert not (tmp_path / "run").exists()
        config = validate_config(tiny_config_dict(
            tmp_path, data={"dataset": "noise_test", "options": {"size": 32, "channels": 1}}, plugins=plugin,
            run={"max_steps": 2}))
        result = train(config, quiet=True)
        assert result.steps == 2 and result.state.data.info.channels == 1 and len(result.state.data.train) == 32

        code, out, _ = run_cli(["components", "--json"], capsys)
        assert code == 0
        rows = {row["name"]: row for row in json.loads(out)["datasets"]}
        assert rows["noise_test"]["distribution"] == "(registered in code)"
        assert rows["procedural"]["distribution"] == "hasten"
        assert {o["name"]: o["default"] for o in rows["noise_test"]["options"]} == {"size": 64, "channels": 3}
        schema = config_schema()
    # The schema offers the plugin's dataset with its options.
    assert schema["$defs"]["dataset.noise_test.options"]["properties"]["size"]["default"] == 64
    REGISTRY.datasets.remove("noise_test")  # the run registered it in the process-wide registry


def test_components_text_lists_options_defaults_and_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["components"], capsys)
    assert code == 0
    assert "  procedural  (hasten)" in out
    assert "    train_size: int = 5000  training images" in out
    assert "    method: 'simsiam' | 'byol' | 'simclr' | 'mocov2plus' | 'dino' = 'simsiam'" in out
    assert "  warmup_cosine  (hasten)" in out


# ---- the schema: discriminated by the chosen component -------------------------------------------

@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = config_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_schema_names_its_dialect_and_id(validator: Any) -> None:
    assert validator.schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert validator.schema["$id"] == f"urn:hasten:config-schema:{hasten.__version__}"


def test_schema_validates_the_chosen_components_options(validator: Any) -> None:
    def errors(config: dict[str, Any]) -> list[str]:
        return [e.message for e in validator.iter_errors(config)]

    byol = {"task": {"name": "ssl", "options": {"method": "byol", "tau_base": 0.99, "knn_k": 20}}}
    assert errors(byol) == []
    assert any("'swav' is not one of" in e for e in errors({"task": {"name": "ssl", "options": {"method": "swav"}}}))
    # an option the chosen method does not take
    assert errors({"task": {"name": "ssl", "options": {"method": "simsiam", "temperature": 0.2}}})
    assert errors({"task": {"name": "ssl", "options": {"method": "simclr", "temperature": 0.2}}}) == []
    # options follow the chosen name; an absent name is the default component
    assert errors({"data": {"options": {"train_size": 100}}}) == []
    assert errors({"data": {"options": {"train_sizee": 100}}})
    assert errors({"data": {"dataset": "spiral", "options": {"train_size": 100}}})
    assert errors({"data": {"dataset": "spiral", "options": {"turns": 3.0}}}) == []
    assert errors({"model": {"name": "vit_tiny", "options": {"width": 8}}})
    assert errors({"model": {"options": {"width": 8}}}) == []
    assert errors({"model": {"name": "resnet9000"}})
    assert errors({"data": {"dataset": "npz", "unlabeled": {"dataset": "spiral", "options": {"noise": 0.1}}}}) == []


def test_schema_carries_descriptions_and_defaults(validator: Any) -> None:
    options = validator.schema["$defs"]["dataset.procedural.options"]["properties"]
    assert options["train_size"]["default"] == 5000 and options["train_size"]["description"] == "training images"
    assert validator.schema["$defs"]["task.ssl.options"]["properties"]["method"]["default"] == "simsiam"


def test_example_configs_validate_against_the_schema(validator: Any) -> None:
    examples = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        data = yaml.safe_load(path.read_text())
        data.pop("plugins", None)  # plugins' settings are in the schema only when they are installed
        assert [e.message for e in validator.iter_errors(data)] == [], path.name


# ---- every run leaves its result -------------------------------------------------------------------

def test_run_without_progress_or_tracking_leaves_config_metrics_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, run={"max_steps": 6, "log_every": 2, "progress": False},
                        eval={"every_steps": 3}, tracking={"enabled": False})
    code, out, err = run_cli(["train", path], capsys)
    assert code == 0
    run_dir = tmp_path / "run"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/loss" in r["metrics"]]
    eval_rows = [r for r in rows if "val/acc1" in r["metrics"]]
    assert [r["step"] for r in train_rows] == [1, 3, 5]  # every log_every=2 steps, 0-based
    assert [r["step"] for r in eval_rows] == [2, 5]  # after steps 3 and 6
    assert all(r["metrics"]["train/loss"] > 0 for r in train_rows)
    assert all(0.0 <= r["metrics"]["val/acc1"] <= 1.0 for r in eval_rows)
    elapsed = [r["metrics"]["time/elapsed"] for r in rows]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    flops = [r["metrics"]["flops/total"] for r in train_rows]
    assert flops[0] > 0 and flops[2] == pytest.approx(3 * flops[0])  # equal steps: 2, 4, 6 of them
    assert eval_rows[0]["metrics"]["flops/total"] == pytest.approx(flops[0] * 3 / 2)  # the cost at step 3

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == summary["total_steps"] == 6 and summary["finished"] is True
    assert summary["stop_reason"] is None and summary["tracking"] is None
    assert summary["metrics"]["val/acc1"] == eval_rows[-1]["metrics"]["val/acc1"]
    assert summary["metrics"]["flops/total"] == pytest.approx(flops[-1])
    assert summary["elapsed_s"] >= elapsed[-1]

    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["run"]["max_steps"] == 6 and resolved["optim"]["lr"] == 0.05
    assert resolved["schedule"]["name"] == "cosine"  # defaults filled in
    written = validate_config(yaml.safe_load(Path(path).read_text()))
    assert validate_config(resolved).model_dump() == written.model_dump()

    # The summary is printed although run.progress is off...
    assert "summary" in err and "val/acc1" in err and str(run_dir) in err
    # ... and --quiet prints nothing, but leaves the same files.
    quiet_dir = tmp_path / "quiet"
    code, out, err = run_cli(["train", path, "--quiet", "--set", f"run.run_dir={quiet_dir}"], capsys)
    assert code == 0 and out == "" and "summary" not in err
    quiet = json.loads((quiet_dir / "summary.json").read_text())
    assert quiet["metrics"]["val/acc1"] == summary["metrics"]["val/acc1"]  # same seed, same run
    assert len((quiet_dir / "metrics.jsonl").read_text().splitlines()) == len(rows)


def test_resumed_run_keeps_one_row_per_step(tmp_path: Path) -> None:
    class StopAt(hasten.Plugin):
        name = "stop_at_3"

        @hasten.hookimpl
        def hasten_step_end(self, state: hasten.State, output: Any) -> None:
            if state.step == 3:
                state.should_stop = "test stop"

    run = {"max_steps": 6, "log_every": 1, "checkpoint_every": 2}
    with plugin_available(StopAt):
        first = train(validate_config(tiny_config_dict(tmp_path, run=run, eval={"every_steps": 100},
                                                       plugins={"stop_at_3": {}})), quiet=True)
    assert first.steps == 4
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stop_reason"] == "test stop"
    second = train(validate_config(tiny_config_dict(tmp_path, run=run, eval={"every_steps": 100})),
                   resume=True, quiet=True)
    assert second.steps == 6
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r["metrics"]] == [0, 1, 2, 3, 4, 5]
    elapsed = [r["metrics"]["time/elapsed"] for r in rows]
    assert elapsed == sorted(elapsed)  # summed over the resume
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["finished"] is True


# ---- optimizers: a catalog like the others --------------------------------------------------------

def test_optimizers_are_a_registry_catalog_listed_and_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert REGISTRY.optimizers.names() == ["adamw", "sgd"]
    code, out, _ = run_cli(["components", "--json"], capsys)
    assert code == 0 and [row["name"] for row in json.loads(out)["optimizers"]] == ["adamw", "sgd"]
    config = write_config(tmp_path, optim={"name": "sgdd"})
    for command in (["train", config], ["config", config]):
        code, _, err = run_cli(command, capsys)
        assert code == 2 and "Traceback" not in err
        assert "optim.name: unknown optimizer 'sgdd' (did you mean 'sgd'?); allowed: adamw, sgd" in err
    assert not (tmp_path / "run").exists()  # refused before any work
