"""The run configuration: pydantic models, YAML/TOML loading and ``--set`` overrides.

Every section forbids unknown keys, so a typo is an error that names the key
path, not a silently ignored setting. Plugin settings are validated against
each plugin's own ``Settings`` model by :mod:`hasten.plugins`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hasten.errors import UserError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(Section):
    name: str = "hasten"
    seed: int = Field(0, ge=0)
    #: length of training in optimizer steps; exactly one of max_steps / epochs
    max_steps: int | None = Field(None, gt=0)
    epochs: float | None = Field(None, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False
    #: runs are written to output_dir/<name>-<timestamp> unless run_dir is given
    output_dir: str = "runs"
    run_dir: str | None = None
    log_every: int = Field(10, gt=0)
    checkpoint_every: int | None = Field(None, gt=0)
    keep_checkpoints: int = Field(2, ge=1)
    deterministic: bool = True
    progress: bool = True
    threads: int | None = Field(None, gt=0)
    #: debugging: each rank writes the dataset indices and losses of its steps to run_dir/indices-rank<r>.pt
    record_indices: bool = False

    @model_validator(mode="after")
    def _one_length(self) -> RunConfig:
        if self.max_steps is not None and self.epochs is not None:
            raise ValueError("set run.max_steps or run.epochs, not both")
        return self


class AugmentConfig(Section):
    """Batch augmentation on the training device (see hasten.data.augment)."""

    preset: Literal["classification", "simclr", "none"] = "classification"
    crop_scale: tuple[float, float] | None = None
    flip: float | None = Field(None, ge=0, le=1)
    color_jitter: float | None = Field(None, ge=0, le=1)
    grayscale: float | None = Field(None, ge=0, le=1)
    blur: float | None = Field(None, ge=0, le=1)
    solarize: float | None = Field(None, ge=0, le=1)
    #: augmentation magnitude when no plugin schedules it (5 = SimCLR strength)
    magnitude: float = Field(5.0, ge=0, le=30)


class UnlabeledConfig(Section):
    """A second, unlabeled stream (semi-supervised learning, UBN)."""

    #: another dataset, or null for the unlabeled remainder of data.dataset
    dataset: str | None = None
    path: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    batch_size: int | None = Field(None, gt=0)


class DataConfig(Section):
    dataset: str = "procedural"
    path: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    #: source and full training resolution (square), pixels
    resolution: int = Field(32, gt=0)
    #: global batch size (split evenly across torchrun processes)
    batch_size: int = Field(128, gt=0)
    loader: Literal["torch", "dali"] = "torch"
    #: where the DALI loader decodes and augments: auto = gpu when run.device is CUDA, else cpu
    dali_device: Literal["auto", "cpu", "gpu"] = "auto"
    num_workers: int = Field(0, ge=0)
    skip_corrupt: bool = False
    #: keep labels for only part of the training set; the rest is unlabeled
    labeled_fraction: float | None = Field(None, gt=0, le=1)
    labels_per_class: int | None = Field(None, gt=0)
    unlabeled: UnlabeledConfig | None = None
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @model_validator(mode="after")
    def _one_label_rule(self) -> DataConfig:
        if self.labeled_fraction is not None and self.labels_per_class is not None:
            raise ValueError("set data.labeled_fraction or data.labels_per_class, not both")
        return self


class ModelConfig(Section):
    name: str = "small_resnet"
    options: dict[str, Any] = Field(default_factory=dict)


class TaskConfig(Section):
    name: str = "classification"
    options: dict[str, Any] = Field(default_factory=dict)


class OptimConfig(Section):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = Field(None, gt=0)


class ScheduleConfig(Section):
    """Core LR schedules, the baselines of docs/methods.md section 2."""

    #: a registered schedule: constant, cosine, warmup_cosine (plugins may add more)
    name: str = "cosine"
    warmup_steps: int | None = Field(None, ge=0)
    warmup_fraction: float | None = Field(None, ge=0, lt=1)
    final_lr: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _one_warmup(self) -> ScheduleConfig:
        if self.warmup_steps is not None and self.warmup_fraction is not None:
            raise ValueError("set schedule.warmup_steps or schedule.warmup_fraction, not both")
        return self


class EvalConfig(Section):
    #: evaluate every N steps (and always at the end); null = once per epoch
    every_steps: int | None = Field(None, gt=0)
    batch_size: int = Field(256, gt=0)
    #: the metric `hasten compare` measures time- and FLOPs-to-target with
    metric: str = "val/acc1"
    max_batches: int | None = Field(None, gt=0)


class TrackingConfig(Section):
    enabled: bool = True
    #: any MLflow tracking URI; default: sqlite:///mlruns.db in the working directory
    uri: str | None = None
    experiment: str = "hasten"
    #: log asynchronously in batches so a slow server never slows a step
    asynchronous: bool = True
    artifacts: bool = True
    #: seconds the end of a run waits for an unreachable server before writing
    #: the unsent data to RUN_DIR/tracking-fallback.jsonl (`hasten sync` sends it)
    flush_timeout: float = Field(120.0, ge=0)


class Config(Section):
    run: RunConfig = Field(default_factory=RunConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    #: enabled plugins, in call order: name -> settings (validated by the plugin)
    plugins: dict[str, dict[str, Any] | None] = Field(default_factory=dict)
    #: where the config came from (for artifacts); not a user setting
    source: str | None = Field(None, exclude=True)

    def plugin_settings(self, name: str) -> dict[str, Any]:
        return dict(self.plugins.get(name) or {})

    def flat(self) -> dict[str, Any]:
        """Dotted-key view of the resolved config (MLflow params)."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict) and value:
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            else:
                out[prefix] = value

        walk("", self.model_dump(mode="json"))
        return out


# ----------------------------------------------------------------- loading
def read_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML (safe loader: no object construction) or TOML file."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"config file {str(file)!r} not found")
    text = file.read_text(encoding="utf-8")
    try:
        if file.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{file}:{where}: malformed YAML: {problem}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{file}: malformed TOML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{file}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``a.b.c=value`` (value parsed as YAML: numbers, lists, null)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {assignment!r}: expected KEY.PATH=VALUE, e.g. optim.lr=0.2")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"--set {assignment!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def format_validation_error(exc: ValidationError, data: dict[str, Any], prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            section = ".".join(str(p) for p in err["loc"][:-1])
            model: Any = Config
            for part in err["loc"][:-1]:
                field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
                ann = getattr(field, "annotation", None)
                model = _section_model(ann)
            allowed = sorted(model.model_fields) if hasattr(model, "model_fields") else []
            where = f"{prefix}.{section}" if prefix and section else (section or prefix)
            msg = f"unknown key{' in ' + where if where else ''}; allowed: {', '.join(allowed)}"
            lines.append(f"{path}: {msg}")
            continue
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"{path}: {msg}{shown}")
    return "invalid config:\n  " + "\n  ".join(lines)


def _section_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a config (plugin settings are checked later,
    by :func:`hasten.plugins.PluginSet.build`)."""
    data = read_file(path) if path is not None else {}
    for assignment in overrides or []:
        apply_override(data, assignment)
    return validate_config(data, source=str(path) if path is not None else None)


def validate_config(data: dict[str, Any], source: str | None = None) -> Config:
    plugins = data.get("plugins")
    if plugins is not None and not isinstance(plugins, dict):
        raise UserError(
            f"plugins: expected a mapping of plugin name -> settings, got {plugins!r}"
        )
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, data)) from None
    config.source = source
    return config
