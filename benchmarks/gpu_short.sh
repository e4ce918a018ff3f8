#!/usr/bin/env bash
# The gpu-short scale in one go on one CUDA GPU (benchmarks/README.md, "gpu-short scale"):
# the supervised suite (uniform frontier at 5 budgets + every technique at 1/2 and 2/3, one seed),
# Imagenette at 64 px, bf16, channels-last, the DALI GPU pipeline. Sized to train in under 8 minutes on
# an H200; the whole script stops at a hard limit below 9 minutes (a stopped sweep continues where it
# stopped when started again: finished runs are kept as records).
#
#   bash benchmarks/gpu_short.sh          check, install what is missing, train, report
#   bash benchmarks/gpu_short.sh --dry    check and plan only (nvidia-smi, imports, the run list and the estimate)
#
# Installs only what the project declares: the core with its `dali` extra and the plugins in plugins/,
# and only when an import is missing (`pip install -e '.[dali]' plugins/...`). Without network, set
# HASTEN_WHEELS to a folder of wheels: pip then installs from it alone (--no-index --find-links).
# Data: $HASTEN_SHARED_DATA/imagenette2-128, else shared/datasets in the checkout, else ../shared/datasets.
# Output: everything is printed and, when $OUT is set, written under $OUT: gpu_short.log, and
# gpu_short_results.tar.gz (the records, configs, plot and RESULTS.md section of the study).
set -u -o pipefail

LIMIT_S=530  # hard limit of the whole script: 8 min 50 s
REPORT_S=45  # kept back from training for the report and the packing
START=$(date +%s)
DRY=0
case "${1:-}" in
  --dry) DRY=1 ;;
  "") ;;
  *) echo "usage: bash benchmarks/gpu_short.sh [--dry]" >&2; exit 2 ;;
esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
LOG=/dev/null
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  LOG="$OUT/gpu_short.log"
fi
# every line of output goes to the terminal and to $OUT/gpu_short.log
exec > >(tee -a "$LOG") 2>&1

left() { echo $((LIMIT_S - ($(date +%s) - START))); }

echo "== gpu-short: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$([ $DRY = 1 ] && echo ', --dry')"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi
else
  echo "nvidia-smi: not found"
fi

if [ -z "${HASTEN_SHARED_DATA:-}" ] && [ -d "$REPO/shared/datasets/imagenette2-128" ]; then
  export HASTEN_SHARED_DATA="$REPO/shared/datasets"
fi
echo "data: ${HASTEN_SHARED_DATA:-$REPO/../shared/datasets} (imagenette2-128)"

# What the study imports; nvidia.dali is the `dali` extra of pyproject.toml.
MISSING=$("$PY" - <<'EOF'
import importlib
names = ["torch", "torchvision", "pluggy", "pydantic", "yaml", "mlflow", "fvcore", "rich", "matplotlib", "numpy",
         "nvidia.dali"]
missing = []
for name in names:
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - any failure to import is "missing"
        missing.append(name)
print(" ".join(missing))
EOF
)
if [ -n "$MISSING" ]; then
  PIP_ARGS=(-e ".[dali]")
  for plugin in plugins/*/; do PIP_ARGS+=(-e "$plugin"); done
  [ -n "${HASTEN_WHEELS:-}" ] && PIP_ARGS=(--no-index --find-links "$HASTEN_WHEELS" "${PIP_ARGS[@]}")
  echo "missing imports: $MISSING"
  if [ $DRY = 1 ]; then
    echo "--dry: would run: $PY -m pip install ${PIP_ARGS[*]}"
  else
    echo "installing: $PY -m pip install ${PIP_ARGS[*]}"
    timeout $(($(left) - REPORT_S - 60)) "$PY" -m pip install -q "${PIP_ARGS[@]}" || {
      echo "gpu-short: the install failed (above); nothing trained"; exit 2; }
  fi
fi
# From the checkout whether installed or not: the benchmark registers the plugins under plugins/ itself.
export PYTHONPATH="$REPO/core${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'EOF'
import torch
print(f"python torch {torch.__version__}, CUDA {torch.version.cuda}, GPU: "
      + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"))
try:
    import nvidia.dali as dali
    print(f"DALI {dali.__version__}")
except ImportError as error:
    print(f"DALI: not importable ({error})")
EOF

if [ $DRY = 1 ]; then
  "$PY" benchmarks/frontier.py --scale gpu-short --plan
  RC=$?
  echo "== gpu-short --dry: done in $(($(date +%s) - START)) s (nothing trained)"
  exit $RC
fi

TRAIN_S=$(($(left) - REPORT_S))
echo "== training (at most $TRAIN_S s; the suite is estimated by --plan)"
timeout -k 15 "$TRAIN_S" "$PY" benchmarks/frontier.py --scale gpu-short
RC=$?
[ $RC = 124 ] && echo "gpu-short: stopped at the time limit; rerun the script to finish the runs not yet done"
TRAINED=$(($(date +%s) - START))
echo "== report (from the records; training rc $RC, $TRAINED s so far)"
timeout -k 5 $(($(left) - 10)) "$PY" benchmarks/frontier.py --scale gpu-short --report
if [ -n "${OUT:-}" ]; then
  tar -czf "$OUT/gpu_short_results.tar.gz" --exclude='*/runs' --exclude='*/mlflow.db' \
    benchmarks/results/frontier-gpu-short benchmarks/RESULTS.md 2>/dev/null
  echo "packed: $OUT/gpu_short_results.tar.gz"
fi
echo "== gpu-short: done in $(($(date +%s) - START)) s (limit $LIMIT_S s)"
exit $RC
