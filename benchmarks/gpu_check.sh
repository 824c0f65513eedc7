#!/usr/bin/env bash
# One prepared check for whoever has a CUDA card for a few minutes (under 8 on one H100): it runs the GPU
# acceptance grid (grids/gpu-check.toml: every pruner x every attack on ResNet-20, CIFAR-10), `pytest -m gpu`,
# benchmarks/train.py, benchmarks/attacks.py and benchmarks/profile_autoattack.py --device cuda, and writes one
# Markdown report to $OUT/gpu_check_report.md when $OUT is set, else ./gpu_check_report.md. Every stage is timed
# and capped; a failed or timed-out stage is recorded in the report and the next stage still runs.
#
# Usage:  benchmarks/gpu_check.sh DATA
#   DATA holds cifar10-jpeg.tar.gz (extracted into DATA/cifar10-jpeg on first use) or its extracted tree
#   (DATA/cifar10-jpeg/{train,test}/<class>/*.jpg, or DATA/{train,test}/...). The checkout's /gpu-data/ folder
#   is git-ignored for this: copy the archive and the wheels there and carry it to the card's machine.
#
# Wheels: a card's machine that cannot download needs the project's dependencies its image lacks as wheels in
#   $WHEELS (default DATA/wheels): torch-pruning, pyautoattack, SQLAlchemy, greenlet, torchattacks (Python 3.12,
#   x86-64). They are installed with `pip install --no-index --no-deps --target` into a scratch folder put on
#   PYTHONPATH; torch, torchvision, numpy, scikit-learn, jinja2, typer, rich and pytest must be present already.
#
# Environment: OUT (report folder), WHEELS, GPU_CHECK_EXTRA=1 (also profile_eval.py under cProfile and train.py
#   with cuDNN autotuning and with torch.compile), GPU_CHECK_PRECISION=1 (also the 30-epoch bf16-vs-fp32 accuracy
#   test on all of CIFAR-10; it runs beside the functional stages, since it measures accuracy, not speed),
#   GPU_CHECK_PAPER=1 (first, the paper-gpu grid, its results.db written to OUT/paper-gpu.db for publishing
#   beside the CPU study), GPU_CHECK_BUDGET_S (seconds for the whole script: each stage's limit is cut to what
#   is left, a stage with under 20 s left is skipped, and the report is rewritten after every stage, so a lease
#   that ends early still leaves one).
# -e is left out on purpose: a failed stage must not stop the stages after it (each one's status is recorded).
set -uo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
DATA="$(cd "${1:?usage: benchmarks/gpu_check.sh DATA (a folder holding cifar10-jpeg.tar.gz or its extracted tree)}" && pwd)"
WHEELS="${WHEELS:-$DATA/wheels}"
REPORT="${OUT:-.}/gpu_check_report.md"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
PY="${PYTHON:-python3}"
cd "$REPO" || exit 1
# This checkout first, then the wheels' scratch site (filled by the first stage).
export PYTHONPATH="$REPO:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
# One decoded CIFAR-10 for every stage: the grid (--cache-dir), the benchmarks and the precision test.
BENCH="$WORK/bench"
export HARNESS_BENCH_CACHE="$BENCH" HARNESS_CIFAR10_CACHE="$BENCH/data"
BUDGET_S="${GPU_CHECK_BUDGET_S:-0}"
BG_NAME="bf16 vs fp32 accuracy (30 epochs, CIFAR-10)"; BG_LOG=""; BG_STATUS="$WORK/precision.status"
export REPO DATA WHEELS WORK PY BENCH

STAGES=()   # "name|status|seconds" rows for the summary table
LOGS=()     # per-stage log files, in order
T_START=$(date +%s)

# stage NAME LIMIT_S COMMAND...: run, time, cap and log one stage; never stops the script. COMMAND may be one
# of the functions below (exported, run in a child bash so that `timeout` can cap it).
stage() {
  local name="$1" limit="$2"; shift 2
  local log="$WORK/$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_').log"
  local t0=$(date +%s)
  if [ "$BUDGET_S" -gt 0 ]; then
    local left=$(( BUDGET_S - (t0 - T_START) - 15 ))   # 15 s kept for the report
    if [ "$left" -lt 20 ]; then
      echo "== $name: SKIPPED, ${left}s of the ${BUDGET_S}s budget left" | tee "$log"
      STAGES+=("$name|SKIPPED (budget)|0"); LOGS+=("$log"); write_report >/dev/null; return 0
    fi
    [ "$left" -lt "$limit" ] && limit=$left
  fi
  echo "== $name (limit ${limit}s): $*" | tee "$log"
  if [ "$(type -t "$1")" = "function" ]; then set -- bash -c "$1"; fi
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  local status="ok"
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status="TIMED OUT after ${limit}s"; elif [ $rc -ne 0 ]; then status="FAILED (exit $rc)"; fi
  echo "   -> $status in ${dt}s"
  tail -n +2 "$log" | tail -n 5
  STAGES+=("$name|$status|$dt")
  LOGS+=("$log")
  write_report >/dev/null
}

write_report() {
  mkdir -p "$(dirname "$REPORT")"
  {
    echo "# GPU check report"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); total $(( $(date +%s) - T_START )) s"
    echo "- commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" diff --quiet 2>/dev/null || echo ' (dirty)')"
    # Read from the environment stage's log: the report is rewritten after every stage and must never wait.
    [ -f "$WORK/env.txt" ] && sed 's/^/- /' "$WORK/env.txt"
    echo "- CPU cores: $(nproc)"
    echo
    echo "| stage | status | seconds |"
    echo "| --- | --- | ---: |"
    for row in "${STAGES[@]}"; do IFS='|' read -r n s d <<<"$row"; echo "| $n | $s | $d |"; done
    if [ -n "$BG_LOG" ] && [ -f "$BG_LOG" ]; then
      echo
      echo "## $BG_NAME (beside the other stages: $(cat "$BG_STATUS" 2>/dev/null || echo still running))"
      echo
      echo '```'
      tail -n 40 "$BG_LOG"
      echo '```'
    fi
    for i in "${!LOGS[@]}"; do
      IFS='|' read -r n s d <<<"${STAGES[$i]}"
      echo
      echo "## $n ($s, ${d} s)"
      echo
      echo '```'
      tail -n 80 "${LOGS[$i]}"
      echo '```'
    done
  } >"$REPORT"
  echo "report: $REPORT"
}
trap write_report EXIT

# ---- setup ----
setup_wheels() {
  if [ ! -d "$WHEELS" ]; then echo "no wheels folder $WHEELS: using what is installed"; return 0; fi
  "$PY" -m pip install -q --no-index --no-deps --target "$WORK/site" "$WHEELS"/*.whl
}
export -f setup_wheels
stage "install wheels" 120 setup_wheels

setup_data() {
  if [ -d "$DATA/cifar10-jpeg/train" ] || [ -d "$DATA/train" ]; then echo "CIFAR-10 tree present"; return 0; fi
  [ -f "$DATA/cifar10-jpeg.tar.gz" ] || { echo "no cifar10-jpeg.tar.gz and no extracted tree in $DATA"; return 1; }
  mkdir -p "$DATA/cifar10-jpeg" && tar xzf "$DATA/cifar10-jpeg.tar.gz" -C "$DATA/cifar10-jpeg" && ls "$DATA/cifar10-jpeg"
}
export -f setup_data
stage "CIFAR-10 data" 120 setup_data
check_environment() {
  set -o pipefail  # a stage's function runs in a child bash, which does not inherit it
  local gpus
  gpus="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | paste -sd ';')"
  echo "GPU: ${gpus:-nvidia-smi unavailable}" | tee "$WORK/env.txt"
  "$PY" -c 'import torch
n = torch.cuda.device_count()
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {n} device(s)" + (f": {torch.cuda.get_device_name(0)}" if n else ""))
import torch_pruning, sqlalchemy, pyautoattack, torchattacks, harness' | tee -a "$WORK/env.txt"
}
export -f check_environment
stage "environment" 60 check_environment

decode_data() {
  "$PY" -c '
import os, time
from pathlib import Path
from harness.api.plugins import datasets
t0 = time.perf_counter()
d = datasets.get("cifar10").obj(Path(os.environ["DATA"]), Path(os.environ["BENCH"]) / "data")
print(f"train {tuple(d.x_train.shape)}, test {tuple(d.x_test.shape)}, decoded in {time.perf_counter() - t0:.1f} s")'
}
export -f decode_data
stage "CIFAR-10 decode (once, for every stage)" 120 decode_data

# ---- the bf16-vs-fp32 accuracy test (optional), in the background: its result is an accuracy, not a speed. The
# stages it overlaps (the grid, mostly) share the card with it, which can only make their times look worse. ----
if [ "${GPU_CHECK_PRECISION:-0}" = "1" ]; then
  BG_LOG="$WORK/precision.log"
  ( t0=$(date +%s)
    timeout --kill-after=10 "${GPU_CHECK_PRECISION_LIMIT_S:-420}" env HARNESS_CIFAR10_DIR="$DATA" "$PY" -m pytest -m "gpu and slow" \
      -q -s -p no:cacheprovider tests/test_gpu.py -k bf16_reaches >"$BG_LOG" 2>&1
    rc=$?; st="ok"; [ $rc -ne 0 ] && st="FAILED or timed out (exit $rc)"
    echo "$st in $(( $(date +%s) - t0 ))s" >"$BG_STATUS" ) &
  BG_PID=$!
fi

# ---- optional: the study's GPU slice (grids/paper-gpu.toml, ~10 minutes estimated), first, its database to OUT ----
if [ "${GPU_CHECK_PAPER:-0}" = "1" ]; then
  stage "paper-gpu grid (ResNet-56 and VGG-16-BN, the study's GPU slice)" 900 \
    "$PY" -m harness run --grid paper-gpu --device cuda --workers 4 --data-dir "$DATA" --db "${OUT:-.}/paper-gpu.db" \
    --site-dir "$WORK/site-paper" --cache-dir "$BENCH/data"
fi

# ---- the acceptance grid first: it is what must finish ----
grid_summary() {
  [ -f "$WORK/gpu-check.db" ] || { echo "no results database: the grid stage stored nothing"; return 1; }
  "$PY" - "$WORK/gpu-check.db" <<'EOF'
import sys
from collections import defaultdict
from harness.store import Store
from harness.store.queries import result_rows
from sqlalchemy import select
from harness.store import Job

db = Store(sys.argv[1], create=False)
with db.session() as s:
    jobs = s.scalars(select(Job)).all()
    rows = result_rows(s)
    status = defaultdict(int)
    for j in jobs:
        status[str(j.status.value if hasattr(j.status, "value") else j.status)] += 1
    print("jobs by status:", dict(status))
    for j in jobs:
        if j.error:
            print(f"FAILED {j.pruner}@{j.sparsity:g}: {j.error.strip().splitlines()[-1]}")
    v = defaultdict(dict)
    for r in rows:
        v[f"{r.pruner}@{r.sparsity:g}"][(r.metric, r.attack, r.eps)] = r.value
    attacks = sorted({r.attack for r in rows if r.metric == "robust_acc" and "/" not in r.attack})
    print("| pruner | clean | " + " | ".join(attacks) + " | train img/s | job s |")
    print("| --- " * (len(attacks) + 4) + "|")
    for p, m in sorted(v.items()):
        rob = [min((val for (met, a, e), val in m.items() if met == "robust_acc" and a == att), default=float("nan")) for att in attacks]
        print(f"| {p} | {m.get(('clean_acc', '', None), float('nan')):.3f} | " + " | ".join(f"{x:.3f}" for x in rob)
              + f" | {m.get(('train_img_per_s', '', None), float('nan')):,.0f} | {m.get(('job_seconds', '', None), float('nan')):.1f} |")
    print("(robust columns: the lowest robust accuracy over each attack's eps list)")
    # Where a job's time goes: the stages and each attack, averaged over the finished jobs.
    secs = defaultdict(list)
    for m in v.values():
        for (met, a, e), val in m.items():
            if met.endswith("_seconds"):
                secs[f"{a} (attack)" if a else met[: -len("_seconds")]].append(val)
    print("seconds per job, mean over finished jobs: " + ", ".join(f"{k} {sum(x) / len(x):.2f}" for k, x in sorted(secs.items())))
EOF
}
export -f grid_summary
# Four workers share the card: one ResNet-20 job is launch-bound there (so each job's own seconds and img/s are
# those of a shared card; the grid's wall time is the figure that counts).
stage "gpu-check grid (every pruner x every attack, ResNet-20, CIFAR-10)" 300 \
  "$PY" -m harness run --grid gpu-check --device cuda --workers 4 --data-dir "$DATA" --db "$WORK/gpu-check.db" \
  --site-dir "$WORK/site-out" --cache-dir "$BENCH/data" --fresh
stage "gpu-check grid: results" 60 grid_summary

# -v: each test's outcome is in the log as it ends, so a stage cut by its limit still shows which passed.
stage "pytest -m gpu" 240 "$PY" -m pytest -m "gpu and not slow" -v -p no:cacheprovider tests/test_gpu.py tests/test_eval_path.py

# train() and the reference loop alternate, so their ratio holds even where the precision test shares the card.
stage "benchmarks/train.py --device cuda" 90 "$PY" benchmarks/train.py --device cuda --n 10000 --json "$WORK/train.json"

# FGSM, PGD-10 and APGD-CE-100 against torchattacks and pyautoattack on 1,000 images of a ResNet-20 trained for 4
# epochs (about 76 % clean); AutoAttack against pyautoattack on 200 of them, one timed run each, per component.
stage "benchmarks/attacks.py --device cuda (1,000 images, 2/255)" 90 \
  "$PY" benchmarks/attacks.py --device cuda --model resnet20 --data-dir "$DATA" --n 1000 --epochs 4 --n-train 50000 \
  --skip-autoattack
stage "benchmarks/profile_autoattack.py --device cuda (200 images, harness vs pyautoattack per component)" 150 \
  "$PY" benchmarks/profile_autoattack.py --device cuda --data-dir "$DATA" --n 200 --epochs 4 --n-train 50000

if [ "${GPU_CHECK_EXTRA:-0}" = "1" ]; then
  stage "benchmarks/profile_eval.py --device cuda (one gpu-check job's evaluation under cProfile)" 60 \
    "$PY" benchmarks/profile_eval.py --device cuda --grid gpu-check --data-dir "$DATA" --epochs 4 --n-train 50000 --n 200 --top 12
  stage "benchmarks/train.py --device cuda --cudnn-benchmark" 45 \
    "$PY" benchmarks/train.py --device cuda --cudnn-benchmark --n 10000 --arch resnet20 resnet56 vgg16_bn
  # Does torch.compile with CUDA graphs pay off at batch 128, where ResNet-20 is launch-bound (0.4 % of the peak)?
  stage "benchmarks/train.py --device cuda --compile reduce-overhead" 240 \
    "$PY" benchmarks/train.py --device cuda --compile reduce-overhead --n 10000 --arch resnet20 resnet56 vgg16_bn
fi

if [ -n "${BG_PID:-}" ]; then
  # The precision test has what is left of the budget, then the report says where it stood.
  while kill -0 "$BG_PID" 2>/dev/null && { [ "$BUDGET_S" -eq 0 ] || [ $(( BUDGET_S - ($(date +%s) - T_START) )) -gt 15 ]; }; do sleep 2; done
  kill -0 "$BG_PID" 2>/dev/null && echo "cut at the budget's end" >"$BG_STATUS"
fi
