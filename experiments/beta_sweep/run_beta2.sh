#!/usr/bin/env bash
# The AdamW β2-sweep pipeline: train one run per β2, analyse each, tabulate, reheat, tabulate again.
#
#   experiments/beta_sweep/run_beta2.sh [--preset quick|cpu|paper|test] [extra run_study.py flags]
#
# Stages, in order (each runs experiments/beta_sweep/run_study.py with the same flags):
#   train    one run per β2 (default 0.99,0.95,0.90,0.80,0.0); finished runs are skipped, unfinished ones
#            resume from their last checkpoint; a diverged run is recorded and the sweep goes on
#   analyse  analysis/beta_sweep/beta_summary.py on each run, skipped when its beta_metrics.json is newer
#            than its status.json
#   summary  <study>/analysis/beta_sweep_summary.json, table_beta2.md / .csv and the figures
#   reheat   the β2-ablation reheating grid (β2 0.95, 0.80 × checkpoints 2000, 4000 × three learning rates,
#            paper values scaled to the preset); finished reheating runs are skipped
#   final    the summary again, now with the reheating table
# The first failing stage stops the pipeline with its exit status and names the stage; running the same
# command again resumes where it stopped. Extra flags, e.g. --seed 7, --out-dir DIR, --beta2s 0.95,0.8,
# --reheat-beta2s 0.95, --set device=cuda, --device cuda (analysis), --n-batches 8, go to every stage.
set -euo pipefail

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "error: $*" >&2; exit 2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
# Scripts import `training` from this checkout, also with an interpreter that has not installed it (make install)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
STUDY="$ROOT/experiments/beta_sweep/run_study.py"

PRESET=quick; EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) [ $# -ge 2 ] || die "--preset needs a value"; PRESET="$2"; shift 2 ;;
    --preset=*) PRESET="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done
case "$PRESET" in quick|cpu|paper|test) ;; *) die "unknown preset '$PRESET' (choose from quick, cpu, paper, test)" ;; esac

ARGS=(--preset "$PRESET" ${EXTRA[@]+"${EXTRA[@]}"})
[ -t 2 ] || ARGS+=(--no-progress)

stage() {
  local name="$1"; shift
  local t0=$SECONDS rc=0
  echo "=== [$name] run_study.py $* ${ARGS[*]}"
  "$PY" "$STUDY" "$@" "${ARGS[@]}" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "error: β2 pipeline stage '$name' failed (exit $rc); fix the cause and run the same command again to resume" >&2
    exit "$rc"
  fi
  echo "=== [$name] done in $((SECONDS - t0)) s"
}

stage train train
stage analyse analyse
stage summary summary
stage reheat reheat
stage final summary
echo "β2 pipeline finished (preset $PRESET)"
