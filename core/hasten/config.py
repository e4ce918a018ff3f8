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

from hasten.errors import UserError, did_you_mean
from hasten.registry import REGISTRY, Registry


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(Section):
    """How long, where and on what the run trains."""

    name: str = Field("hasten", description="run name: the MLflow run name and the prefix of the run folder")
    seed: int = Field(0, ge=0, description="seed of every random generator (data order, init, augmentation)")
    max_steps: int | None = Field(
        None, gt=0, description="length of training in optimizer steps; set this or run.epochs, not both"
    )
    epochs: float | None = Field(None, gt=0, description="length of training in epochs of the training set")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available, else cpu")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 = autocast to bfloat16 on the device")
    channels_last: bool = Field(
        False, description="channels-last memory format: faster convolutions on GPUs and CPUs (same math)"
    )
    output_dir: str = Field("runs", description="runs are written to output_dir/<name>-<timestamp>")
    run_dir: str | None = Field(None, description="an explicit run folder instead of output_dir/<name>-<timestamp>")
    log_every: int = Field(10, gt=0, description="log training metrics every N steps")
    checkpoint_every: int | None = Field(
        None, gt=0, description="write a checkpoint every N steps (null = only at the end and on a signal)"
    )
    final_checkpoint: bool = Field(
        True, description="write a checkpoint when the run finishes (false: a throw-away run, e.g. lr-find's)"
    )
    keep_checkpoints: int = Field(2, ge=1, description="how many of the newest checkpoints to keep")
    deterministic: bool = Field(True, description="deterministic kernels: the same seed gives the same run")
    progress: bool = Field(True, description="print the start banner, the progress line and the summary")
    threads: int | None = Field(None, gt=0, description="CPU threads of torch (null = torch's default)")
    record_indices: bool = Field(
        False,
        description="debugging: each rank writes the dataset indices and losses of its steps to "
        "run_dir/indices-rank<r>.pt",
    )

    @model_validator(mode="after")
    def _one_length(self) -> RunConfig:
        if self.max_steps is not None and self.epochs is not None:
            raise ValueError("set run.max_steps or run.epochs, not both")
        return self


_PROBABILITY = "probability per image (null = the preset's)"


class AugmentConfig(Section):
    """Batch augmentation on the training device (see hasten.data.augment)."""

    preset: Literal["classification", "simclr", "none"] = Field(
        "classification", description="classification = crop + flip; simclr = the SimCLR recipe; none = off"
    )
    crop_scale: tuple[float, float] | None = Field(
        None, description="random-resized-crop area range, e.g. [0.08, 1.0] (null = the preset's)"
    )
    flip: float | None = Field(None, ge=0, le=1, description=f"horizontal flip {_PROBABILITY}")
    color_jitter: float | None = Field(None, ge=0, le=1, description=f"colour jitter {_PROBABILITY}")
    grayscale: float | None = Field(None, ge=0, le=1, description=f"grayscale {_PROBABILITY}")
    blur: float | None = Field(None, ge=0, le=1, description=f"Gaussian blur {_PROBABILITY}")
    solarize: float | None = Field(None, ge=0, le=1, description=f"solarization {_PROBABILITY}")
    magnitude: float = Field(
        5.0, ge=0, le=30, description="augmentation magnitude when no plugin schedules it (5 = SimCLR strength)"
    )


class UnlabeledConfig(Section):
    """A second, unlabeled stream (semi-supervised learning, UBN)."""

    dataset: str | None = Field(
        None, description="another dataset, or null for the unlabeled remainder of data.dataset"
    )
    path: str | None = Field(None, description="where that dataset lives (files, folder)")
    options: dict[str, Any] = Field(default_factory=dict, description="that dataset's options")
    batch_size: int | None = Field(None, gt=0, description="unlabeled batch size (null = data.batch_size)")


class DataConfig(Section):
    """The training and validation data."""

    dataset: str = Field("procedural", description="a registered dataset, e.g. procedural, cifar10, imagefolder")
    path: str | None = Field(None, description="where the dataset lives (files, folder); built-in data needs none")
    options: dict[str, Any] = Field(default_factory=dict, description="the dataset's own options")
    resolution: int = Field(32, gt=0, description="source and full training resolution (square), pixels")
    batch_size: int = Field(128, gt=0, description="global batch size (split evenly across torchrun processes)")
    loader: Literal["torch", "dali"] = Field("torch", description="torch DataLoader or NVIDIA DALI")
    dali_device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="where the DALI loader decodes and augments: auto = gpu when run.device is CUDA, else cpu"
    )
    num_workers: int = Field(0, ge=0, description="loader worker processes (0 = load in the training process)")
    skip_corrupt: bool = Field(
        False, description="skip unreadable data files (each named once on stderr) instead of stopping"
    )
    train_samples: int | None = Field(
        None, gt=0, description="train on only this many training samples: a fixed random subset, the same for "
        "every run.seed"
    )
    labeled_fraction: float | None = Field(
        None, gt=0, le=1, description="keep labels for only this fraction of the training set; the rest is unlabeled"
    )
    labels_per_class: int | None = Field(
        None, gt=0, description="keep labels for only this many images per class; the rest is unlabeled"
    )
    unlabeled: UnlabeledConfig | None = Field(None, description="a second, unlabeled stream (semi-supervised, UBN)")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="batch augmentation on the device")

    @model_validator(mode="after")
    def _one_label_rule(self) -> DataConfig:
        if self.labeled_fraction is not None and self.labels_per_class is not None:
            raise ValueError("set data.labeled_fraction or data.labels_per_class, not both")
        return self


class ModelConfig(Section):
    """The network."""

    name: str = Field("small_resnet", description="a registered model, e.g. small_resnet, resnet18")
    options: dict[str, Any] = Field(default_factory=dict, description="the model's own options, e.g. width")


class TaskConfig(Section):
    """What is learned: the loss, the views and the evaluation."""

    name: str = Field("classification", description="a registered task: classification, ssl, depth, ...")
    options: dict[str, Any] = Field(default_factory=dict, description="the task's own options (ssl: method, ...)")


class OptimConfig(Section):
    """The optimizer."""

    name: str = Field("sgd", description="a registered optimizer: sgd (with momentum), adamw (plugins add more)")
    lr: float = Field(0.1, gt=0, description="peak learning rate (the schedule scales it)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (plugins may schedule it)")
    nesterov: bool = Field(False, description="Nesterov momentum (sgd)")
    weight_decay: float = Field(5e-4, ge=0, description="L2 weight decay (sgd) / decoupled weight decay (adamw)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW's betas")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value (null = no clipping)")


class ScheduleConfig(Section):
    """Core LR schedules, the baselines of docs/methods.md section 2."""

    name: str = Field("cosine", description="a registered schedule: constant, cosine, warmup_cosine (plugins add more)")
    warmup_steps: int | None = Field(None, ge=0, description="linear warm-up length in steps (warmup_cosine)")
    warmup_fraction: float | None = Field(
        None, ge=0, lt=1, description="linear warm-up length as a fraction of training (warmup_cosine)"
    )
    final_lr: float = Field(0.0, ge=0, description="learning rate at the last step")

    @model_validator(mode="after")
    def _one_warmup(self) -> ScheduleConfig:
        if self.warmup_steps is not None and self.warmup_fraction is not None:
            raise ValueError("set schedule.warmup_steps or schedule.warmup_fraction, not both")
        return self


class EvalConfig(Section):
    """Evaluation on the validation split."""

    every_steps: int | None = Field(
        None, gt=0, description="evaluate every N steps (and always at the end); null = once per epoch"
    )
    batch_size: int = Field(256, gt=0, description="evaluation batch size")
    metric: str = Field(
        "val/acc1",
        description="the metric the progress line shows and `hasten compare` measures time- and FLOPs-to-target "
        "with (knn/acc1 for ssl, val/delta1 for depth)",
    )
    max_batches: int | None = Field(None, gt=0, description="evaluate on at most N batches (null = all)")
    train_subset: int = Field(
        1024, ge=0, description="training samples (a fixed, evenly spaced subset, read without augmentation) "
        "scored at each evaluation as trainset/acc1 and trainset/loss, so under-fitting shows; 0 = off"
    )


class TrackingConfig(Section):
    """MLflow tracking."""

    enabled: bool = Field(True, description="log params, metrics and artifacts to MLflow")
    uri: str | None = Field(
        None, description="any MLflow tracking URI; default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns.db here"
    )
    experiment: str = Field("hasten", description="MLflow experiment name")
    asynchronous: bool = Field(
        True, description="log asynchronously in batches so a slow server never slows a step"
    )
    artifacts: bool = Field(True, description="log the resolved config, the final weights and the plots")
    flush_timeout: float = Field(
        120.0,
        ge=0,
        description="seconds the end of a run waits for an unreachable server before writing the unsent data to "
        "RUN_DIR/tracking-fallback.jsonl (`hasten sync` sends it)",
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="extra MLflow run tags (`hasten sweep` tags each run with its config hash, "
        "budget and seed)"
    )
    system_metrics: bool = Field(
        False, description="log CPU, memory, disk, network (and GPU) use as MLflow system metrics (needs psutil)"
    )


class Config(Section):
    """A hasten run: every section has defaults; plugins are enabled by name."""

    run: RunConfig = Field(default_factory=RunConfig, description=RunConfig.__doc__)
    data: DataConfig = Field(default_factory=DataConfig, description=DataConfig.__doc__)
    model: ModelConfig = Field(default_factory=ModelConfig, description=ModelConfig.__doc__)
    task: TaskConfig = Field(default_factory=TaskConfig, description=TaskConfig.__doc__)
    optim: OptimConfig = Field(default_factory=OptimConfig, description=OptimConfig.__doc__)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description=ScheduleConfig.__doc__)
    eval: EvalConfig = Field(default_factory=EvalConfig, description=EvalConfig.__doc__)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description=TrackingConfig.__doc__)
    plugins: dict[str, dict[str, Any] | None] = Field(
        default_factory=dict, description="enabled plugins, in call order: name -> settings (validated by the plugin)"
    )
    #: where the config came from (for artifacts); not a user setting
    source: str | None = Field(None, exclude=True)

    def plugin_settings(self, name: str) -> dict[str, Any]:
        return dict(self.plugins.get(name) or {})

    def flat(self, exclude_defaults: bool = False) -> dict[str, Any]:
        """Dotted-key view of the resolved config (MLflow params); ``exclude_defaults``: only the values
        set away from their defaults."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict) and value:
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            else:
                out[prefix] = value

        walk("", self.model_dump(mode="json", exclude_defaults=exclude_defaults))
        return out


# ----------------------------------------------------------------- loading
def read_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML (safe loader: no object construction) or TOML file.

    Refused, naming the file (and line): text that is not UTF-8, a key given
    twice in one mapping (YAML would keep the last silently; TOML refuses it
    itself), a file with no sections (empty, or only comments).
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"config file {str(file)!r} not found")
    text = decode_config_text(file, file.read_bytes())
    try:
        if file.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            reject_duplicate_keys(file, text)
            data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{file}:{where}: malformed YAML: {problem}") from None
    except tomllib.TOMLDecodeError as exc:
        twice = " (a key or table given twice; each may appear once)" if "Cannot overwrite" in str(exc) or (
            "Cannot declare" in str(exc)) else ""
        raise UserError(f"{file}: malformed TOML: {exc}{twice}") from None
    sections = ", ".join(name for name in Config.model_fields if name != "source")
    if data is None or data == {}:
        raise UserError(
            f"{file}: the config holds no sections ({'empty file' if not text.strip() else 'no keys'}); "
            f"give at least one of: {sections}"
        )
    if not isinstance(data, dict):
        raise UserError(f"{file}: the top level must be a mapping of sections ({sections}), got {type(data).__name__}")
    return data


def decode_config_text(file: Path, raw: bytes) -> str:
    """UTF-8 text (a byte-order mark allowed); UserError naming the file, line and byte otherwise."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UserError(f"{file}: the file is UTF-16 text; config files must be UTF-8 (save it as UTF-8)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{file}: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8 text; config files must be "
            "UTF-8 (save the file as UTF-8)"
        ) from None


def reject_duplicate_keys(file: Path, text: str) -> None:
    """UserError naming file:line and the key path of the first key given twice in one YAML mapping."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)

    def walk(node: yaml.Node | None, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key is not None and key != "<<":
                    where = f"{path}.{key}" if path else str(key)
                    if key in seen:
                        raise UserError(
                            f"{file}:{key_node.start_mark.line + 1}: {where}: key given twice (first on line "
                            f"{seen[key]}); a key may appear once per section"
                        )
                    seen[key] = key_node.start_mark.line + 1
                    walk(value_node, where)
                else:
                    walk(value_node, path)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, f"{path}[{index}]")

    walk(root, "")


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


def format_validation_error(
    exc: ValidationError, data: dict[str, Any], prefix: str = "", model: type[BaseModel] | None = None
) -> str:
    """One line per error: key path, what is wrong, the bad value or the allowed keys.

    ``model`` is the model ``data`` was validated against (default
    :class:`Config`; a plugin's ``Settings`` or a component's options, with
    ``prefix`` their config path), so an unknown key lists the keys of *its*
    section, with the closest one suggested.
    """
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            section = ".".join(str(p) for p in err["loc"][:-1])
            allowed = sorted(_model_at(model or Config, err["loc"][:-1]))
            where = f"{prefix}.{section}" if prefix and section else (section or prefix)
            hint = did_you_mean(str(err["loc"][-1]), allowed)
            msg = f"unknown key{' in ' + where if where else ''}{hint}; allowed: {', '.join(allowed) or '(none)'}"
            lines.append(f"{path}: {msg}")
            continue
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"{path}: {msg}{shown}")
    return "invalid config:\n  " + "\n  ".join(lines)


def _model_at(model: Any, loc: tuple[Any, ...] | list[Any]) -> list[str]:
    """The field names of the (nested) section at ``loc`` below ``model``."""
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if fields is None:
            return []
        field = fields.get(str(part))
        model = _section_model(getattr(field, "annotation", None))
    return list(getattr(model, "model_fields", None) or [])


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
    validate_component_options(config)
    return config


def validate_component_options(config: Config, registry: Registry | None = None, *, strict: bool = False) -> None:
    """Check ``data.options``, ``data.unlabeled.options``, ``model.options`` and ``task.options``
    against the options model of the chosen component: a UserError names the full key path
    (``data.options.train_sizee``) and the allowed keys.

    A name not registered (yet) is skipped unless ``strict``: plugins register their components
    when a run starts; the engine calls this again, strictly, once they have.
    """
    catalogs = registry or REGISTRY
    data = config.data
    checks = [("data", data.dataset, data.options, catalogs.datasets, "dataset"),
              ("model", config.model.name, config.model.options, catalogs.models, "name"),
              ("task", config.task.name, config.task.options, catalogs.tasks, "name")]
    if config.optim.name in catalogs.optimizers or strict:  # no options of its own: the optim section's apply
        catalogs.optimizers.get(config.optim.name, key="optim.name")
    if data.unlabeled is not None:
        if data.unlabeled.dataset is not None:
            checks.append(("data.unlabeled", data.unlabeled.dataset, data.unlabeled.options, catalogs.datasets,
                           "dataset"))
        elif data.unlabeled.options:
            raise UserError("data.unlabeled.options: apply only with data.unlabeled.dataset (without it the "
                            "unlabeled stream comes from data.dataset, with data.options)")
    for section, name, options, catalog, name_key in checks:
        if name not in catalog and not strict:
            continue
        component = catalog.get(name, key=f"{section}.{name_key}")
        component.validate(options, key=f"{section}.options")
        if section == "data" and data.skip_corrupt and component.options is not None and (
            "skip_corrupt" not in component.options.model_fields
        ):
            raise UserError(
                f"data.skip_corrupt: dataset {name!r} reads its files when it is built, so there is "
                "nothing to skip per sample; allowed only with datasets that decode files lazily (imagefolder)"
            )
