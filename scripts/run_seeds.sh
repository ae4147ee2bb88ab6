#!/usr/bin/env bash
# Several seeds of one configuration, side by side, then the claims ledger over them.
#
#   scripts/run_seeds.sh --preset P --seeds 42,271,314 [--out-dir DIR] [--jobs N] [--device D] [--controls]
#                        [--basin-trials N] [--study STUDY_DIR]... [--dry-run] [extra flags for training/pilot.py]
#
# Each seed runs the whole per-seed pipeline (scripts/run_seed.sh) into DIR/s<seed> (default DIR:
# runs/<preset>_seeds), N at a time (default: all at once on a CPU, one at a time on a GPU), each with
# its log in DIR/s<seed>/pipeline.log. Then the ledger (analysis/claims/claims.py) judges the claims over
# all seeds into DIR/claims.md and DIR/claims.json, and figures/seed_overlay.py draws the seeds over each
# other (DIR/figures/), figures/seed_tables.py writes Tables 2, 4, 6/7 and the reheating table over the seeds
# (DIR/seed_tables.md). Killing the command and running it again resumes: finished seeds are skipped,
# unfinished ones resume at their unfinished stage. A seed that fails does not stop the others; the command
# then ends with one error line naming it. --controls adds the reheating controls of claim 19 to every seed
# (run_seed.sh --controls; seeds finished without them are completed); --basin-trials N gives every seed's basin depth N
# trials per checkpoint and σ (claim 21's rule needs 2; seeds finished with fewer are completed). --dry-run prints the plan and the
# regime line, and runs nothing. The ledger also judges claims 16 and 18 from the SGD-control and β2-sweep studies
# of these seeds that exist beside DIR (scripts/run_studies.sh: ../sgd_controls_<preset>_s<seed>,
# ../beta_sweep_<preset>_s<seed>) and from every --study STUDY_DIR given.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PRESET=""; SEEDS=""; OUT=""; JOBS=""; DEVICE=auto; DRY=0; EXTRA=(); CONTROLS=(); TRIALS=(); STUDIES=()
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) [ $# -ge 2 ] || die "--preset needs a value"; PRESET="$2"; shift 2 ;;
    --seeds) [ $# -ge 2 ] || die "--seeds needs a comma-separated list"; SEEDS="$2"; shift 2 ;;
    --out-dir) [ $# -ge 2 ] || die "--out-dir needs a value"; OUT="$2"; shift 2 ;;
    --jobs) [ $# -ge 2 ] || die "--jobs needs a value"; JOBS="$2"; shift 2 ;;
    --device) [ $# -ge 2 ] || die "--device needs a value"; DEVICE="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --controls) CONTROLS=(--controls); shift ;;
    --basin-trials) [ $# -ge 2 ] || die "--basin-trials needs a value"; check_trials "$2"; TRIALS=(--basin-trials "$2"); shift 2 ;;
    --study) [ $# -ge 2 ] || die "--study needs a study directory"; STUDIES+=(--study "$2"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done
[ -n "$PRESET" ] || { usage >&2; die "missing --preset"; }
[ -n "$SEEDS" ] || { usage >&2; die "missing --seeds (e.g. --seeds 42,271,314)"; }
parse_seeds "$SEEDS"
if [ -n "$JOBS" ]; then
  [[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive integer (got '$JOBS')"
fi
OUT="${OUT:-runs/${PRESET}_seeds}"
cd "$ROOT"

# the preset and flags are checked (and the regime line printed) by the training CLI itself
PLAN="$("$PY" training/pilot.py --preset "$PRESET" --seed "${SEED_LIST[0]}" --device "$DEVICE" \
        ${EXTRA[@]+"${EXTRA[@]}"} --dry-run 2>&1)" || { echo "$PLAN" | grep '^error:' >&2 || echo "$PLAN" >&2; exit 2; }
CORES="$("$PY" -c 'from training.studies.parallel import cpu_count; print(cpu_count())')"
ON_GPU="$("$PY" -c 'import sys, torch; d = sys.argv[1]; print(int(d in ("cuda",) or (d == "auto" and torch.cuda.is_available())))' "$DEVICE")"
if [ -z "$JOBS" ]; then
  if [ "$ON_GPU" = 1 ]; then JOBS=1; else JOBS=${#SEED_LIST[@]}; fi
fi
THREADS=$(( CORES / JOBS )); [ "$THREADS" -ge 1 ] || THREADS=1

echo "seeds ${SEEDS} of preset ${PRESET} into ${OUT}/s<seed>: ${JOBS} at a time, ${THREADS} thread(s) each"
echo "$PLAN" | sed -n '/^regime /,$p'
if [ "$DRY" = 1 ]; then
  for s in "${SEED_LIST[@]}"; do
    echo "  scripts/run_seed.sh $s --preset $PRESET --device $DEVICE --out-dir $OUT/s$s ${CONTROLS[*]-} ${TRIALS[*]-} ${EXTRA[*]-}"
  done
  echo "  then: analysis/claims/claims.py over ${#SEED_LIST[@]} runs (and the seeds' studies found beside $OUT) -> $OUT/claims.md; figures/seed_overlay.py -> $OUT/figures/; figures/seed_tables.py -> $OUT/seed_tables.md"
  exit 0
fi
mkdir -p "$OUT" || die "cannot create $OUT"

T0=$SECONDS
declare -A PIDS=()
FAILED=()
finished() {
  pipeline_finished "$OUT/s$1" && { [ ${#CONTROLS[@]} -eq 0 ] || [ -f "$OUT/s$1/.stages/14b_reheat_controls.done" ]; } &&
    { [ ${#TRIALS[@]} -eq 0 ] || [ "$(basin_trials "$OUT/s$1")" -ge "${TRIALS[1]}" ]; }
}
reap() {   # wait for one pipeline to end; record a failure
  local pid s rc
  wait -n -p pid "${!PIDS[@]}" && rc=0 || rc=$?
  s="${PIDS[$pid]}"; unset "PIDS[$pid]"
  if [ $rc -ne 0 ]; then
    FAILED+=("$s")
    echo "failed: seed $s (exit $rc; log: $OUT/s$s/pipeline.log)" >&2
  else
    echo "seed $s finished ($((SECONDS - T0)) s)"
  fi
}
for s in "${SEED_LIST[@]}"; do
  if finished "$s"; then
    echo "skip seed $s: finished ($OUT/s$s/report.md)"
    continue
  fi
  while [ ${#PIDS[@]} -ge "$JOBS" ]; do reap; done
  mkdir -p "$OUT/s$s"
  echo "start seed $s -> $OUT/s$s (log: $OUT/s$s/pipeline.log)"
  OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS scripts/run_seed.sh "$s" --preset "$PRESET" --device "$DEVICE" \
    --out-dir "$OUT/s$s" ${CONTROLS[@]+"${CONTROLS[@]}"} ${TRIALS[@]+"${TRIALS[@]}"} ${EXTRA[@]+"${EXTRA[@]}"} >> "$OUT/s$s/pipeline.log" 2>&1 &
  PIDS[$!]="$s"
done
while [ ${#PIDS[@]} -gt 0 ]; do reap; done
if [ ${#FAILED[@]} -gt 0 ]; then
  die "seed(s) ${FAILED[*]} failed (see their pipeline.log); fix the cause and run the same command again: finished seeds are skipped, the others resume"
fi

RUN_ARGS=()
for s in "${SEED_LIST[@]}"; do RUN_ARGS+=(--run-dir "$OUT/s$s"); done
BESIDE="$(dirname "$OUT")"
for s in "${SEED_LIST[@]}"; do   # the studies of scripts/run_studies.sh for these seeds (their default directories)
  d="$BESIDE/sgd_controls_${PRESET}_s$s"; [ -f "$d/analysis/sgd_control_results.json" ] && STUDIES+=(--study "$d")
  d="$BESIDE/beta_sweep_${PRESET}_s$s"; [ -f "$d/analysis/beta_sweep_summary.json" ] && STUDIES+=(--study "$d")
done
[ ${#STUDIES[@]} -eq 0 ] || echo "ledger with the studies: $(printf '%s ' "${STUDIES[@]}" | sed 's/--study //g')"
"$PY" analysis/claims/claims.py "${RUN_ARGS[@]}" ${STUDIES[@]+"${STUDIES[@]}"} --out-dir "$OUT"
"$PY" figures/seed_overlay.py "${RUN_ARGS[@]}" --out-dir "$OUT/figures"
"$PY" figures/seed_tables.py "${RUN_ARGS[@]}" --out-dir "$OUT"
echo "seeds finished in $((SECONDS - T0)) s: $OUT/claims.md"
