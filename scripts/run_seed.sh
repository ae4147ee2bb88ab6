#!/usr/bin/env bash
# The per-seed pipeline: train one run, analyse it, reheat it, draw its figures and write its report.
#
#   scripts/run_seed.sh SEED [--preset quick|cpu|paper|test] [--out-dir RUN] [--device D] [--until STAGE]
#                       [--controls] [--basin-trials N] [extra training flags]
#
# Stages (each is skipped when RUN/.stages/<stage>.done exists; the flag is written only when the stage
# succeeds; the first failure stops the pipeline with a non-zero exit that names the stage):
#   01_env_snapshot  02_training  03_eval_noise  04_oscillations  04b_oscillation_tiers  05_trajectory_pca
#   06_update_alignment  06b_backbone_phases  06c_drift_scaling
#   07_residual_decomposition  07b_integration_test  08_switching_alignment  09_fisher_analysis  09b_fisher_peaks
#   10_rayleigh_quotients  11_basin_tests  12_basin_depth  12b_basin_recovery  13_manifold_dim  14_reheating
#   [14b_reheat_controls]  14c_lr_threshold_map  15_reheat_geometry
#   15b_claims  16_figures  17_report
# --controls adds stage 14b: the reheating controls of claim 19 (experiments/reheating/controls.py: λ unchanged and a
# λ = 0-trained start, which trains the run a second time); the stages after it are then redone.
# --basin-trials N: stage 12's trials per (checkpoint, σ) (default 4 at `paper`, 1 elsewhere; claim 21's rule needs
# ≥ 2); a run whose basin depth has fewer is completed (the finished trials are kept) and its ledger redone.
# Killing the pipeline and running the same command again resumes at the unfinished stage (training itself
# resumes exactly from its last checkpoint). Extra flags (e.g. --steps 2000, --set n_layer=4) go to
# training/pilot.py; the default run directory name encodes them. --until STAGE stops after that stage.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ $# -ge 1 ] || { usage >&2; die "missing SEED (an integer)"; }
case "$1" in -h|--help) usage; exit 0 ;; esac
SEED="$1"; shift
[[ "$SEED" =~ ^[0-9]+$ ]] || die "SEED must be a non-negative integer (got '$SEED')"

PRESET=quick; RUN=""; DEVICE=auto; EXTRA=(); UNTIL=""; CONTROLS=0; TRIALS=""
ALL_STAGES=" 01_env_snapshot 02_training 03_eval_noise 04_oscillations 04b_oscillation_tiers 05_trajectory_pca 06_update_alignment
 06b_backbone_phases 06c_drift_scaling 07_residual_decomposition 07b_integration_test 08_switching_alignment 09_fisher_analysis 09b_fisher_peaks 10_rayleigh_quotients 11_basin_tests
 12_basin_depth 12b_basin_recovery 13_manifold_dim 14_reheating 14b_reheat_controls 14c_lr_threshold_map 15_reheat_geometry 15b_claims 16_figures 17_report "
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) [ $# -ge 2 ] || die "--preset needs a value"; PRESET="$2"; shift 2 ;;
    --out-dir) [ $# -ge 2 ] || die "--out-dir needs a value"; RUN="$2"; shift 2 ;;
    --device) [ $# -ge 2 ] || die "--device needs a value"; DEVICE="$2"; shift 2 ;;
    --until) [ $# -ge 2 ] || die "--until needs a stage name"; UNTIL="$2"; shift 2 ;;
    --controls) CONTROLS=1; shift ;;
    --basin-trials) [ $# -ge 2 ] || die "--basin-trials needs a value"; check_trials "$2"; TRIALS="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done
case "$PRESET" in quick|cpu|paper|test) ;; *) die "unknown preset '$PRESET' (choose from quick, cpu, paper, test)" ;; esac
if [ -n "$UNTIL" ] && [[ "$ALL_STAGES" != *" $UNTIL "* ]]; then
  die "unknown stage '$UNTIL' for --until (stages:$(echo $ALL_STAGES | sed 's/^/ /'))"
fi

cd "$ROOT"
TRAIN_ARGS=(--preset "$PRESET" --seed "$SEED" --device "$DEVICE" ${EXTRA[@]+"${EXTRA[@]}"})
if [ -z "$RUN" ]; then
  RUN="$("$PY" training/pilot.py "${TRAIN_ARGS[@]}" --print-run-dir)" || exit 2
fi
STAGES="$RUN/.stages"
mkdir -p "$STAGES"
NP=(--no-progress)
[ -t 2 ] && NP=()

# Analysis settings per preset: the paper's sample sizes at `paper`, small ones elsewhere. The analysis batch size
# comes from training/core/regime.py, which also reports it beside the paper's.
AB="$("$PY" -c 'import sys; from training.core.regime import pipeline_analysis_batch as f; print(f(sys.argv[1]))' "$PRESET")"
# Checkpoints: the Fisher analyses at Table 6's four (scaled to the run) everywhere; the gradient alignment at
# Figure 2's eleven at `paper` and `cpu`, at five spread checkpoints at `quick`/`test` (eleven would add ~2 min to
# make demo).
if [ "$PRESET" = paper ]; then
  GRAD=(--n-batches 32 --batch-size "$AB" --device "$DEVICE")
  RAYLEIGH=(--n-batches 32 --batch-size "$AB" --n-random 10 --device "$DEVICE")
  TRIALS="${TRIALS:-4}"
else
  GRAD=(--batch-size "$AB" --device "$DEVICE"); RAYLEIGH=(--batch-size "$AB" --device "$DEVICE"); TRIALS="${TRIALS:-1}"
fi
DEPTH=(--n-trials "$TRIALS" --device "$DEVICE")
case "$PRESET" in paper|cpu) ALIGN_STEPS=(--steps paper-figure2) ;; *) ALIGN_STEPS=() ;; esac
# B1 recovery: the two largest switch pairs with p_ood every 50 paper steps by default. At `cpu` the largest pair
# only, with p_ood every 100 paper steps (12 updates of the 120): the three seeds give three starts, and the stage
# costs about half as much (it was the longest analysis of `make demo-seeds`: 650 s of a seed's 45 minutes).
case "$PRESET" in cpu) RECOVERY=(--max-pairs 1 --every 12 --device "$DEVICE") ;; *) RECOVERY=(--device "$DEVICE") ;; esac
FISHER_STEPS=(--steps paper-table6)

T_START=$SECONDS
stage() {
  local name="$1"; shift
  if [ -f "$STAGES/$name.done" ]; then
    echo "[skip] $name (done)"
    return 0
  fi
  echo "[run ] $name"
  local t0=$SECONDS rc=0
  "$@" || rc=$?
  if [ $rc -ne 0 ]; then
    echo "pipeline stopped: stage $name failed (exit $rc); fix the cause and run the same command again to resume" >&2
    exit $rc
  fi
  touch "$STAGES/$name.done"
  echo "[done] $name ($((SECONDS - t0)) s)"
}
# run one stage, then stop if it is the --until stage
step() {
  stage "$@"
  if [ "$1" = "$UNTIL" ]; then
    echo "stopped after $UNTIL (--until) in $((SECONDS - T_START)) s: $RUN"
    exit 0
  fi
}

env_snapshot() {
  mkdir -p "$RUN/env"
  "$PY" -m pip freeze > "$RUN/env/pip_freeze.txt" 2>/dev/null || echo "pip unavailable" > "$RUN/env/pip_freeze.txt"
  { uname -a; "$PY" --version; nproc 2>/dev/null || true; } > "$RUN/env/system.txt"
  git -C "$ROOT" rev-parse HEAD > "$RUN/env/git_commit.txt" 2>/dev/null || echo "not a git checkout" > "$RUN/env/git_commit.txt"
  git -C "$ROOT" status --porcelain > "$RUN/env/git_status.txt" 2>/dev/null || true
  printf '%q ' "$0" "$SEED" --preset "$PRESET" --device "$DEVICE" ${EXTRA[@]+"${EXTRA[@]}"} > "$RUN/env/command.txt"
  echo >> "$RUN/env/command.txt"
}

train() {
  if [ -f "$RUN/config.json" ]; then
    "$PY" training/pilot.py --resume --out-dir "$RUN" --device "$DEVICE" "${NP[@]}"
  else
    "$PY" training/pilot.py "${TRAIN_ARGS[@]}" --out-dir "$RUN" "${NP[@]}"
  fi
  local state
  state="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["state"])' "$RUN/status.json")"
  case "$state" in
    completed) ;;
    diverged) echo "note: the run diverged; the analyses use the checkpoints it wrote" >&2 ;;
    *) echo "training ended in state '$state'" >&2; return 1 ;;
  esac
}

a() { "$PY" "analysis/$1.py" --run-dir "$RUN" "${NP[@]}" "${@:2}"; }

step 01_env_snapshot env_snapshot
step 02_training train
step 03_eval_noise a basin/eval_noise
step 04_oscillations a switching/detect_oscillations
step 04b_oscillation_tiers a switching/oscillation_tiers
step 05_trajectory_pca a backbone/trajectory_pca
step 06_update_alignment a backbone/update_alignment
step 06b_backbone_phases a backbone/backbone_phases
step 06c_drift_scaling a backbone/drift_scaling
step 07_residual_decomposition a backbone/residual_decomposition "${GRAD[@]}" ${ALIGN_STEPS[@]+"${ALIGN_STEPS[@]}"}
step 07b_integration_test a backbone/integration_test --device "$DEVICE"
step 08_switching_alignment a switching/switching_alignment
step 09_fisher_analysis a fisher/fisher_analysis "${GRAD[@]}" "${FISHER_STEPS[@]}"
step 09b_fisher_peaks a fisher/fisher_peaks "${GRAD[@]}"
step 10_rayleigh_quotients a fisher/rayleigh_quotients "${RAYLEIGH[@]}" "${FISHER_STEPS[@]}"
step 11_basin_tests a basin/basin_tests
if [ -f "$STAGES/12_basin_depth.done" ] && [ "$(basin_trials "$RUN")" -lt "$TRIALS" ]; then
  # more trials than the finished basin depth has: complete it, then redo the stages that read it
  rm -f "$STAGES"/{12_basin_depth,15b_claims,16_figures,17_report}.done
fi
step 12_basin_depth a basin/basin_depth "${DEPTH[@]}"
step 12b_basin_recovery a basin/basin_recovery "${RECOVERY[@]}"
step 13_manifold_dim a basin/manifold_dim
step 14_reheating "$PY" experiments/reheating/reheat.py --run-dir "$RUN" "${NP[@]}"
if [ "$CONTROLS" = 1 ]; then
  if [ ! -f "$STAGES/14b_reheat_controls.done" ]; then
    # the stages that read the controls' runs and verdict are redone after them
    rm -f "$STAGES"/{15_reheat_geometry,15b_claims,16_figures,17_report}.done
  fi
  step 14b_reheat_controls "$PY" experiments/reheating/controls.py --run-dir "$RUN" "${NP[@]}"
fi
step 14c_lr_threshold_map a basin/lr_threshold_map
step 15_reheat_geometry a reheating/reheat_geometry
step 15b_claims a claims/claims
step 16_figures "$PY" figures/make_paper_figures.py --run-dir "$RUN"
step 17_report "$PY" figures/make_report.py --run-dir "$RUN" --reuse-figures

echo "pipeline finished in $((SECONDS - T_START)) s: $RUN/report.md"
