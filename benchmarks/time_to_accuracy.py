"""Time- and FLOPs-to-accuracy of every technique against a fully annealed cosine baseline.

    python benchmarks/time_to_accuracy.py --suite supervised --scale cpu --seeds 3
    python benchmarks/time_to_accuracy.py --suite all --dry-run        (the plan and time estimate only)
    python benchmarks/time_to_accuracy.py --suite all --quick          (tiny sizes: checks the script)

Suites (one RESULTS.md section each, per scale):

* supervised: Imagenette classification. Uniform cosine baseline; the same
  at 2/3 of the steps (the control: is selection better than just stopping
  early with a fully annealed schedule?); Fast Online Minibatch Selection +
  cool-down, selection without cool-down and greedy top-b + cool-down at 2/3
  of the steps (the research's 300k of 450k); a ViT uniform baseline and the
  ViT with selection + cool-down.
* selection_ablation: the investigation when selection + cool-down does not
  reach the baseline at CPU scale: beta, candidate ratio, selection
  resolution and cool-down length, one at a time (``--seeds 1``).
* ssl: SimSiam (``--ssl-method byol`` for BYOL), kNN accuracy. Cosine
  baseline; cosine at 0.6x of the epochs (control); F1-CLR, F1-CLR +
  super-progressive, F1-CLR + Hard Augment and all three at 0.6x (the
  research's 480 of 800 epochs).
* schedules: SimSiam at the shortened length (0.6x): cosine vs warm-up +
  cosine vs F1-CLR, all with the same peak LR (only the shape differs).
* progressive_ablation: SimSiam with F1-CLR at 0.6x: full resolution vs
  super-progressive with three minimum resolutions.

Every recipe runs for ``--seeds`` seeds through ``hasten compare``'s
machinery (benchmarks/common.py); the target of each comparison is its
baseline's median final metric. ``--scale cpu`` is sized for 5-10 minutes a
recipe run on 2 idle CPU cores (small_resnet, 32-64 px, 4-5 epochs);
``--scale gpu`` is the research's settings scaled to Imagenette at 128 px.
Before training, the plan (recipes x seeds x estimated minutes, from planned
FLOPs and a short throughput probe on this machine) is printed.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    RESULTS_DIR,
    SMOKE_DIR,
    Recipe,
    Research,
    ensure_plugins,
    markdown_table,
    run_recipes,
    shared_datasets,
    summarize,
    write_plot,
    write_section,
)

SUITES = ("supervised", "selection_ablation", "ssl", "schedules", "progressive_ablation")
PLUGINS = ("selection", "cooldown", "f1clr", "progressive", "hardaug")

#: sizes per scale. epochs = the baseline's length; short = the efficient recipes' share of it.
SCALES: dict[str, dict[str, Any]] = {
    "cpu": {
        "supervised": {"resolution": 64, "batch": 64, "epochs": 4, "short": 2 / 3, "lr": 0.1,
                       "model": {"name": "small_resnet", "options": {"width": 16}},
                       "selection_resolution": 28,  # 96/224 of 64 px
                       "vit": {"name": "vit_tiny", "options": {"patch_size": 8, "ref_resolution": 64}},
                       "vit_selection_resolution": 32,  # a multiple of the patch size
                       "vit_lr": 1e-3},
        "ssl": {"resolution": 32, "batch": 128, "epochs": 5, "short": 0.6, "lr": 0.05, "max_lr": 0.1,
                "model": {"name": "small_resnet", "options": {"width": 16}},
                "sp_min": 16, "sp_step": 4, "sp_ablation": (20, 16, 12),  # ~128, 96, 64 of 224 at 32 px
                "ha_resolution": 12},  # ~64/224 of 32 px, rounded up
    },
    "gpu": {
        "supervised": {"resolution": 128, "batch": 128, "epochs": 80, "short": 2 / 3, "lr": 0.1,
                       "model": {"name": "resnet50", "options": {"small_stem": False}},
                       "selection_resolution": 56,
                       "vit": {"name": "vit_s16", "options": {"ref_resolution": 128}},
                       "vit_selection_resolution": 64,
                       "vit_lr": 1e-3},
        "ssl": {"resolution": 128, "batch": 128, "epochs": 800, "short": 0.6, "lr": 0.05, "max_lr": 0.2,
                "model": {"name": "resnet18", "options": {"small_stem": False}},
                "sp_min": 64, "sp_step": 16, "sp_ablation": (80, 64, 48),
                "ha_resolution": 32},
    },
}
#: --quick: tiny everything (steps instead of epochs), only to check that the script runs end to end
QUICK = {"resolution": 16, "batch": 16, "steps": 6, "short_steps": 4, "width": 4}
EVALS_PER_BASELINE = 8  # evaluations over the baseline's length: the time-to-target resolution


@dataclass
class Suite:
    name: str
    title: str
    metric: str
    recipes: list[Recipe]
    sizes: str  # stated in the section: what "cpu" or "gpu" scale means here


# ------------------------------------------------------------ data and sizes
def data_section(data: Path | None, resolution: int, batch: int, quick: bool) -> tuple[dict[str, Any], int]:
    """The ``data:`` section and the number of training images."""
    if data is not None:
        section = {"dataset": "imagefolder", "path": str(data), "resolution": resolution, "batch_size": batch,
                   "num_workers": 0, "options": {"cache": True}}  # decoded once, kept at `resolution` in memory
        count = sum(1 for p in (data / "train").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        return section, count
    size = 256 if quick else 9469  # Imagenette's train size, so lengths in steps match
    return {"dataset": "procedural", "resolution": resolution, "batch_size": batch,
            "options": {"train_size": size, "val_size": 64 if quick else 3925}}, size


def length(epochs: float, images: int, batch: int) -> int:
    return max(1, round(epochs * images / batch))


def base_config(name: str, data: dict[str, Any], model: dict[str, Any], steps: int, eval_every: int,
                quick: bool) -> dict[str, Any]:
    return {
        "run": {"name": name, "max_steps": steps, "log_every": max(1, min(50, eval_every)),
                "progress": not quick},
        "data": copy.deepcopy(data),
        "model": copy.deepcopy(model),
        "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
        "schedule": {"name": "cosine"},  # fully annealed to 0: the honest baseline
        "eval": {"every_steps": eval_every, "batch_size": 256, **({"max_batches": 1} if quick else {})},
    }


def with_length(config: dict[str, Any], steps: int) -> dict[str, Any]:
    out = copy.deepcopy(config)
    out["run"]["max_steps"] = steps
    return out


def with_plugins(config: dict[str, Any], **plugins: Any) -> dict[str, Any]:
    out = copy.deepcopy(config)
    out.setdefault("plugins", {}).update(plugins)
    if "f1clr" in plugins:
        out.pop("schedule", None)  # f1clr owns the LR; a schedule: section as well is a config error
    return out


# ------------------------------------------------------------ suites
def supervised_suite(scale: str, data: Path | None, quick: bool, ablation: bool = False) -> Suite:
    """The selection table; ``ablation``: one setting of selection + cool-down changed at a time."""
    s = SCALES[scale]["supervised"]
    res, batch = (QUICK["resolution"], QUICK["batch"]) if quick else (s["resolution"], s["batch"])
    data_cfg, images = data_section(data, res, batch, quick)
    model = copy.deepcopy(s["model"])
    if quick:
        model = {"name": "small_resnet", "options": {"width": QUICK["width"]}}
    full = QUICK["steps"] if quick else length(s["epochs"], images, batch)
    short = QUICK["short_steps"] if quick else round(full * s["short"])
    every = max(1, full // EVALS_PER_BASELINE)
    base = base_config("supervised", data_cfg, model, full, every, quick)
    base["optim"]["lr"] = s["lr"]
    sel_res = res // 2 if quick else s["selection_resolution"]
    selection = {"beta": 1.0, "candidate_ratio": 2.0, "selection_resolution": sel_res,
                 "warmup_steps": max(1, round(0.03 * short)), "strategy": "probabilistic"}
    cooldown = {"fraction": 0.1}
    short_base = with_length(base, short)

    vit = copy.deepcopy(s["vit"])
    if quick:
        vit = {"name": "vit_tiny", "options": {"patch_size": 8, "ref_resolution": res, "depth": 1}}
    vit_base = base_config("supervised-vit", data_cfg, vit, full, every, quick)
    vit_base["optim"] = {"name": "adamw", "lr": s["vit_lr"], "weight_decay": 0.05}
    # ViTs need an LR warm-up (5%); the schedule still anneals fully to 0
    vit_base["schedule"] = {"name": "warmup_cosine", "warmup_steps": max(1, round(0.05 * full))}
    vit_selection = {**selection, "selection_resolution": res // 2 if quick else s["vit_selection_resolution"],
                     "warmup_steps": max(1, round(0.1 * short))}  # ViT: longer uniform warm-up (research)

    recipes = [
        Recipe("uniform", base),
        Recipe("uniform, 2/3 steps (control)", short_base, baseline="uniform",
               research=Research("control: a shorter fully annealed run; selection must beat it")),
        Recipe("selection + cool-down, 2/3 steps",
               with_plugins(short_base, selection=selection, cooldown=cooldown), baseline="uniform",
               research=Research("1.2-1.4x FLOPs (1.3-1.5x steps); Imagenette R50 1.3x", 1.2, 1.4)),
        Recipe("selection, no cool-down, 2/3 steps", with_plugins(short_base, selection=selection),
               baseline="uniform",
               research=Research("lower accuracy than with cool-down (ImageNet 75.5 vs 76.1%)")),
        Recipe("greedy top-b + cool-down, 2/3 steps",
               with_plugins(short_base, selection={**selection, "strategy": "greedy"}, cooldown=cooldown),
               baseline="uniform", research=Research("greedy loses accuracy (ImageNet 74.7 vs 76.4%)")),
        Recipe("ViT uniform", vit_base),
        Recipe("ViT selection + cool-down, 2/3 steps",
               with_plugins(with_length(vit_base, short), selection=vit_selection, cooldown=cooldown),
               baseline="ViT uniform", research=Research("ViT-S/16 1.5x FLOPs at 73.3 -> 73.2%", 1.5, 1.5)),
    ]
    if ablation:
        reference = with_plugins(short_base, selection=selection, cooldown=cooldown)

        def variant(name: str, config: dict[str, Any]) -> Recipe:
            return Recipe(name, config, baseline="uniform")

        recipes = [
            Recipe("uniform", base),
            variant("selection + cool-down, 2/3 steps (as in the supervised table)", reference),
            variant("beta 0.5", with_plugins(short_base, selection={**selection, "beta": 0.5}, cooldown=cooldown)),
            variant("candidate ratio 4 (b_bar = 4b)",
                    with_plugins(short_base, selection={**selection, "candidate_ratio": 4.0}, cooldown=cooldown)),
            variant(f"selection resolution {res} px (full)",
                    with_plugins(short_base, selection={**selection, "selection_resolution": res},
                                 cooldown=cooldown)),
            variant("cool-down 30%", with_plugins(short_base, selection=selection, cooldown={"fraction": 0.3})),
        ]
        sizes = (f"{data_cfg['dataset']} {res} px, batch {batch}; {model['name']} {model.get('options', {})}, "
                 f"SGD nesterov lr {base['optim']['lr']} cosine; baseline {full} steps; each variant changes one "
                 f"setting of the reference (b_bar = 2b at {sel_res} px, beta 1, cool-down 10%, {short} steps)")
        return Suite("selection_ablation", "Supervised: selection settings at CPU scale (Imagenette)", "val/acc1",
                     recipes, sizes)
    sizes = (f"{data_cfg['dataset']} {res} px, batch {batch}; {model['name']} {model.get('options', {})}, "
             f"SGD nesterov lr {base['optim']['lr']} cosine; {vit['name']} {vit.get('options', {})}, AdamW "
             f"lr {s['vit_lr']} warm-up cosine; baseline {full} steps, short recipes {short} steps; "
             f"selection b_bar = 2b at {sel_res} px, beta 1, cool-down 10%; evaluation every {every} steps")
    return Suite("supervised", "Supervised: Fast Online Minibatch Selection (Imagenette)", "val/acc1",
                 recipes, sizes)


def _ssl_parts(scale: str, data: Path | None, quick: bool, method: str) -> dict[str, Any]:
    s = SCALES[scale]["ssl"]
    res, batch = (QUICK["resolution"], QUICK["batch"]) if quick else (s["resolution"], s["batch"])
    data_cfg, images = data_section(data, res, batch, quick)
    data_cfg["augment"] = {"preset": "simclr", "magnitude": 5.0}
    if data is None:  # random colours identify each procedural scene: SSL needs the fixed-colour scenes (docs/ssl.md)
        data_cfg["options"]["colours"] = "fixed"
    model = {"name": "small_resnet", "options": {"width": QUICK["width"]}} if quick else copy.deepcopy(s["model"])
    full = QUICK["steps"] if quick else length(s["epochs"], images, batch)
    short = QUICK["short_steps"] if quick else round(full * s["short"])
    every = max(1, full // EVALS_PER_BASELINE)
    base = base_config(f"ssl-{method}", data_cfg, model, full, every, quick)
    base["task"] = {"name": "ssl", "options": {"method": method, **({"knn_bank_size": 64} if quick else {})}}
    base["optim"] = {"name": "sgd", "lr": s["lr"], "momentum": 0.9, "weight_decay": 5e-4}
    base["eval"]["metric"] = "knn/acc1"
    warmup = max(1, round(short / 6))  # the research: 80 of 480 epochs
    f1clr = {"max_lr": s["max_lr"], "warmup_steps": warmup, "momentum_low": 0.85, "momentum_high": 0.95}
    step = 4 if quick else s["sp_step"]
    progressive = {"mode": "super", "min_resolution": 8 if quick else s["sp_min"], "resolution_step": step,
                   "min_magnitude": 4.0, "max_magnitude": 6.0}
    hardaug = {"num_views": 6, "selection_resolution": 8 if quick else s["ha_resolution"]}
    return {"s": s, "res": res, "batch": batch, "data": data_cfg, "model": model, "full": full, "short": short,
            "every": every, "base": base, "f1clr": f1clr, "progressive": progressive, "hardaug": hardaug,
            "ablation": (12, 8) if quick else s["sp_ablation"], "method": method}


def _ssl_sizes(p: dict[str, Any], extra: str) -> str:
    return (f"{p['data']['dataset']} {p['res']} px, batch {p['batch']}, SimCLR augmentation magnitude 5; "
            f"{p['model']['name']} {p['model'].get('options', {})}; {p['method']}; baseline {p['full']} steps "
            f"cosine lr {p['s']['lr']}, efficient recipes {p['short']} steps; F1-CLR max_lr {p['f1clr']['max_lr']} "
            f"warm-up {p['f1clr']['warmup_steps']} steps; {extra}; kNN (k 200) every {p['every']} steps")


def ssl_suite(scale: str, data: Path | None, quick: bool, method: str) -> Suite:
    p = _ssl_parts(scale, data, quick, method)
    short = with_length(p["base"], p["short"])
    f1 = with_plugins(short, f1clr=p["f1clr"])
    recipes = [
        Recipe("cosine", p["base"]),
        Recipe("cosine, 0.6x steps (control)", short, baseline="cosine",
               research=Research("control: a shorter fully annealed run")),
        Recipe("F1-CLR", f1, baseline="cosine",
               research=Research("1.7x FLOPs at -0.7 kNN (90.2 vs 90.9)", 1.7, 1.7, "total")),
        Recipe("F1-CLR + super-progressive", with_plugins(f1, progressive=p["progressive"]), baseline="cosine",
               research=Research("2.7x FLOPs at 90.1", 2.7, 2.7, "total")),
        Recipe("F1-CLR + hard augment", with_plugins(f1, hardaug=p["hardaug"]), baseline="cosine",
               research=Research("1.5x FLOPs at 90.3", 1.5, 1.5, "total")),
        Recipe("F1-CLR + super-progressive + hard augment",
               with_plugins(f1, progressive=p["progressive"], hardaug=p["hardaug"]), baseline="cosine",
               research=Research("2.4x FLOPs at 91.4 (> baseline 90.9)", 2.4, 2.4, "total")),
    ]
    extra = (f"super-progressive {p['progressive']['min_resolution']}->{p['res']} px in steps of "
             f"{p['progressive']['resolution_step']}, magnitude 4->6; hard augment m 6 at "
             f"{p['hardaug']['selection_resolution']} px")
    return Suite("ssl", f"SSL components ({method}, Imagenette, kNN accuracy)", "knn/acc1", recipes,
                 _ssl_sizes(p, extra))


def schedules_suite(scale: str, data: Path | None, quick: bool, method: str) -> Suite:
    p = _ssl_parts(scale, data, quick, method)
    short = with_length(p["base"], p["short"])
    peak = p["f1clr"]["max_lr"]
    short["optim"]["lr"] = peak  # one peak LR for all three: only the schedule's shape differs
    warm = copy.deepcopy(short)
    warm["schedule"] = {"name": "warmup_cosine", "warmup_steps": p["f1clr"]["warmup_steps"]}
    recipes = [
        Recipe("cosine", short),
        Recipe("warm-up + cosine", warm, baseline="cosine",
               research=Research("ImageNet 100 ep: 66.0% vs cosine 66.1%")),
        Recipe("F1-CLR", with_plugins(short, f1clr=p["f1clr"]), baseline="cosine",
               research=Research("1.3-1.6x to equal accuracy (ImageNet 66.4% vs 66.1%)", 1.3, 1.6)),
        # What the backbone scores before SSL training: how much of each kNN accuracy is learned.
        Recipe("untrained backbone (1 step, reference)", with_length(short, 1), baseline="cosine",
               research=Research("reference: kNN of an (almost) untrained network")),
    ]
    return Suite("schedules", f"LR schedules at a shortened length ({method}, Imagenette)", "knn/acc1", recipes,
                 _ssl_sizes(p, f"all three at {p['short']} steps with peak LR {peak}; warm-up "
                               f"{p['f1clr']['warmup_steps']} steps for warm-up + cosine and F1-CLR"))


def progressive_suite(scale: str, data: Path | None, quick: bool, method: str) -> Suite:
    p = _ssl_parts(scale, data, quick, method)
    f1 = with_plugins(with_length(p["base"], p["short"]), f1clr=p["f1clr"])
    research = {0: ("128/224 of r_max: 1.40x at 86.6%", 1.40), 1: ("96/224: 1.60x at 86.6%", 1.60),
                2: ("64/224: 1.82x at 86.1%", 1.82)}
    recipes = [Recipe(f"F1-CLR, full resolution {p['res']} px", f1)]
    for i, r_min in enumerate(p["ablation"]):
        text, value = research[i]
        recipes.append(Recipe(
            f"super-progressive, r_min {r_min} px",
            with_plugins(f1, progressive={**p["progressive"], "min_resolution": r_min}),
            baseline=recipes[0].name, research=Research(text, value, value, "total")))
    return Suite("progressive_ablation", f"Super-progressive minimum-resolution ablation ({method}, Imagenette)",
                 "knn/acc1", recipes,
                 _ssl_sizes(p, f"F1-CLR at {p['short']} steps for all; r_min {list(p['ablation'])} -> "
                               f"{p['res']} px in steps of {p['progressive']['resolution_step']}"))


def build_suite(name: str, scale: str, data: Path | None, quick: bool, method: str) -> Suite:
    if name in ("supervised", "selection_ablation"):
        return supervised_suite(scale, data, quick, ablation=name == "selection_ablation")
    builders = {"ssl": ssl_suite, "schedules": schedules_suite, "progressive_ablation": progressive_suite}
    return builders[name](scale, data, quick, method)


# ------------------------------------------------------------ plan
def _probe_rate(config: dict[str, Any], steps: int, threads: int | None) -> float:
    """Training FLOPs per second of ``config`` on this machine, from a few untracked steps."""
    import tempfile

    from hasten.config import validate_config
    from hasten.engine import train

    raw = copy.deepcopy(config)
    raw.pop("plugins", None)
    raw["schedule"] = {"name": "cosine"}  # a warm-up of the full run may not fit in the probe's steps
    with tempfile.TemporaryDirectory(prefix="tta-probe-") as tmp:
        raw["run"].update(max_steps=steps, progress=False, run_dir=tmp, checkpoint_every=None, log_every=steps)
        if threads:
            raw["run"]["threads"] = threads
        raw["eval"] = {"every_steps": 10**9, "batch_size": 16, "max_batches": 1}
        if raw.get("task", {}).get("name") == "ssl":
            raw["task"]["options"]["knn_bank_size"] = 16
        raw["tracking"] = {"enabled": False}
        result = train(validate_config(raw))
    assert result.state is not None
    return result.state.flops.train / max(result.wall_time, 1e-9)


def plan(suites: list[Suite], seeds: int, probe_steps: int, threads: int | None, probe: bool = True) -> float:
    """Print recipes x seeds x estimated minutes; return the estimated total hours (nan without ``probe``)."""
    from hasten.commands.estimate import _dry_config
    from hasten.commands.estimate import plan as plan_flops
    from hasten.config import validate_config

    total = 0.0
    rates: dict[str, float] = {}
    for suite in suites:
        print(f"\n{suite.name}: {suite.sizes}")
        print(f"  {'recipe':<46}{'steps':>7}{'train+overhead FLOPs':>22}{'est. min/run':>14}{'x seeds':>9}")
        for recipe in suite.recipes:
            config = copy.deepcopy(recipe.config)
            assert isinstance(config, dict)
            group = json.dumps([config["model"], config.get("task"), config["data"]["resolution"]], sort_keys=True)
            if probe and group not in rates:  # one probe per (model, task, resolution): FLOPs/s differ
                started = time.perf_counter()
                rates[group] = _probe_rate(config, probe_steps, threads)
                print(f"  (probe: {config['model']['name']} at {config['data']['resolution']} px, "
                      f"{rates[group] / 1e9:.1f} GFLOP/s training, {time.perf_counter() - started:.0f} s)")
            config["plugins"] = {k: v for k, v in config.get("plugins", {}).items() if k != "eval_clock"}
            with _dry_config(validate_config(config), without_plugins=False) as dry:
                planned = plan_flops(dry)
            evals = planned.steps // config["eval"]["every_steps"] + 1
            # an evaluation forwards the val split (and the train split as the kNN bank) once per image;
            # a training step costs 3 forwards per view
            ssl = config.get("task", {}).get("name") == "ssl"
            eval_images = 3925 + (9469 if ssl else 0)
            per_image = planned.train_flops / max(1, planned.steps * planned.batch_size) / (6 if ssl else 3)
            eval_flops = evals * eval_images * per_image
            minutes = (planned.total_flops + eval_flops) / rates[group] / 60 if probe else math.nan
            total += minutes * seeds
            shown = (f"{minutes:>14.1f}{minutes * seeds:>9.1f}" if probe else f"{'-':>14}{'-':>9}")
            print(f"  {recipe.name:<46}{planned.steps:>7}{planned.total_flops:>22.3e}{shown}")
    if probe:
        print(f"\nestimated total: {total / 60:.1f} h for {seeds} seed(s) (FLOPs, evaluation included, at the "
              "probed rate; loading, augmentation and the first epoch's JPEG decoding add to it)")
    else:
        print("\nno throughput probe on this machine (no GPU for --scale gpu): FLOPs only")
    return total / 60


# ------------------------------------------------------------ main
def default_data() -> Path | None:
    folder = shared_datasets() / "imagenette2-128"
    return folder if (folder / "train").is_dir() else None


def repo_relative(uri: str) -> str:
    """A tracking URI with this checkout's absolute path made relative to the repository root
    (``sqlite:///benchmarks/results/...``), so the committed JSON names no machine's paths."""
    root = str(Path(__file__).resolve().parents[1])
    return uri.replace(f"sqlite:///{root}/", "sqlite:///")  # three slashes + a relative path: relative


def run_suite(suite: Suite, args: argparse.Namespace, out_dir: Path) -> None:
    seeds = list(range(args.seeds))
    experiment = f"tta-{suite.name}-{args.scale}" + ("-embedded" if args.data_path is None else "")
    results = run_recipes(suite.recipes, seeds, workdir=out_dir / experiment, metric=suite.metric,
                          overrides=args.overrides + ([f"run.threads={args.threads}"] if args.threads else []),
                          experiment=experiment, plugins=PLUGINS)
    rows = summarize(results)
    targets = {r.name: r.target for r in rows if r.baseline == r.name}
    plot = write_plot(results, suite.metric, targets, out_dir / f"{experiment}.png")
    table = markdown_table(rows, suite.metric)
    (out_dir / f"{experiment}.json").write_text(json.dumps(
        {"suite": suite.name, "scale": args.scale, "seeds": seeds, "sizes": suite.sizes,
         "rows": [r.as_dict() for r in rows],
         "runs": {name: [{"seed": s, "run_id": r.run_id, "uri": repo_relative(r.uri), "final": r.final,
                          "steps": r.steps, "curve": r.curve} for s, r in zip(e.seeds, e.runs, strict=True)]
                  for name, e in results.items()}},
        indent=1, default=lambda v: None if isinstance(v, float) and not math.isfinite(v) else v))
    print("\n" + table)
    embedded = args.data_path is None
    why = "as asked (--data embedded)" if args.data == "embedded" else "Imagenette was not found"
    body = (f"Scale `{args.scale}`" + (" (--quick sizes)" if args.quick else "") + f", {len(seeds)} seed(s): "
            f"{suite.sizes}." + (f" **Data: the embedded procedural set ({why}), not Imagenette.**" if embedded
                                 else "") + "\n\n" + table)
    title = suite.title.replace("Imagenette", "embedded procedural data") if embedded else suite.title
    write_section(f"time_to_accuracy/{suite.name}/{args.scale}" + ("/embedded" if embedded else ""),
                  f"{title}, {args.scale} scale", body, quick=args.quick, path=args.results, plot=plot)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=[*SUITES, "all"], default="all")
    parser.add_argument("--scale", choices=list(SCALES), default="cpu")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per recipe (median and spread)")
    parser.add_argument("--data", default=None, help="Imagenette ImageFolder tree (default: "
                        "$HASTEN_SHARED_DATA/imagenette2-128 or ../shared/datasets/imagenette2-128), or "
                        "'embedded': the procedural scenes (fixed colours for SSL), written to their own sections")
    parser.add_argument("--ssl-method", default="simsiam", choices=["simsiam", "byol", "simclr", "mocov2plus", "dino"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value in every recipe (repeatable), e.g. run.device=cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few steps: checks the script runs")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and time estimate, train nothing")
    parser.add_argument("--probe-steps", type=int, default=15, help="steps of the throughput probe per model")
    parser.add_argument("--results", default=None, help="results file (default benchmarks/RESULTS.md; "
                        "--quick: benchmarks/results/smoke/RESULTS.md)")
    args = parser.parse_args(argv)

    if args.data == "embedded":
        args.data_path = None
    elif args.data is not None:
        args.data_path = Path(args.data).resolve()
        if not (args.data_path / "train").is_dir():
            raise SystemExit(f"--data {args.data}: no train/ folder there")
    else:
        args.data_path = default_data()
    if args.data_path is None and args.data != "embedded":
        print(f"NOTICE: {shared_datasets() / 'imagenette2-128'} not found: using the embedded procedural data "
              "(same lengths in steps); the tables will say so", flush=True)
    ensure_plugins(PLUGINS)
    names = SUITES if args.suite == "all" else (args.suite,)
    suites = [build_suite(n, args.scale, args.data_path, args.quick, args.ssl_method) for n in names]
    probe = True
    if args.scale == "gpu" and not args.quick:
        import torch

        if not torch.cuda.is_available():
            print("NOTICE: --scale gpu without a GPU: printing the plan only")
            args.dry_run, probe = True, False
    plan(suites, args.seeds, 3 if args.quick else args.probe_steps, args.threads, probe)
    if args.dry_run:
        return 0
    out_dir = SMOKE_DIR if args.quick else RESULTS_DIR
    for suite in suites:
        run_suite(suite, args, out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
