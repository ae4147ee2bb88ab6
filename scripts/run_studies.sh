#!/usr/bin/env bash
# The SGD-control study and the AdamW β2 sweep for several seeds of one preset, then the claims ledger with them.
#
#   scripts/run_studies.sh --preset P --seeds 42,271,314 [--root DIR] [--no-matched] [--no-trainable]
#                          [--no-reheat] [--dry-run]
#                          [extra flags for every study command, e.g. --set device=cuda]
#
# Per seed s, one study after another (each trains its runs side by side on a CPU):
#   experiments/sgd_controls/run_study.py with Table 8's weight decays   -> DIR/sgd_controls_P_s<s>
#   experiments/beta_sweep/run_study.py train, analyse, summary          -> DIR/beta_sweep_P_s<s>
# and for the first seed only (they answer no claim of the ledger; their tables are in docs/results.md):
#   the SGD-control study with every decay matched to AdamW's Λ_eff      -> DIR/sgd_controls_matched_P_s<s>
#   the same at SGD learning rates at which SGD trains (100x, B 1000x)  -> DIR/sgd_controls_trainable_P_s<s>
#   the β2 sweep's reheating grid, then its summary again
# --no-matched / --no-trainable / --no-reheat leave those out. Default DIR: runs. Every stage is resumable: killing the command and
# running it again skips what is finished and resumes the rest. The first failing stage stops the command with one
# error line naming it. At the end, when DIR/P_seeds holds every seed's finished pipeline (scripts/run_seeds.sh),
# the seeds' ledger is rewritten with the studies (claims 16 and 18; nothing is retrained); otherwise the command
# says what to run. --dry-run prints the plan and runs nothing.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PRESET=""; SEEDS=""; DIR=runs; DRY=0; MATCHED=1; TRAINABLE=1; REHEAT=1; EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) [ $# -ge 2 ] || die "--preset needs a value"; PRESET="$2"; shift 2 ;;
    --seeds) [ $# -ge 2 ] || die "--seeds needs a comma-separated list"; SEEDS="$2"; shift 2 ;;
    --root) [ $# -ge 2 ] || die "--root needs a value"; DIR="$2"; shift 2 ;;
    --no-matched) MATCHED=0; shift ;;
    --no-trainable) TRAINABLE=0; shift ;;
    --no-reheat) REHEAT=0; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done
[ -n "$PRESET" ] || { usage >&2; die "missing --preset"; }
case "$PRESET" in quick|cpu|paper|test) ;; *) die "unknown preset '$PRESET' (choose from quick, cpu, paper, test)" ;; esac
[ -n "$SEEDS" ] || { usage >&2; die "missing --seeds (e.g. --seeds 42,271,314)"; }
parse_seeds "$SEEDS"
cd "$ROOT"

# the plan: one line per stage, "label|command words"
STAGES=()
for s in "${SEED_LIST[@]}"; do
  STAGES+=("SGD controls, seed $s|experiments/sgd_controls/run_study.py --preset $PRESET --seed $s --out-dir $DIR/sgd_controls_${PRESET}_s$s")
  for stage in train analyse summary; do
    STAGES+=("β2 sweep $stage, seed $s|experiments/beta_sweep/run_study.py $stage --preset $PRESET --seed $s --out-dir $DIR/beta_sweep_${PRESET}_s$s")
  done
done
FIRST="${SEED_LIST[0]}"
if [ "$MATCHED" = 1 ]; then
  STAGES+=("SGD controls with matched decays, seed $FIRST|experiments/sgd_controls/run_study.py --preset $PRESET --seed $FIRST --decay matched --out-dir $DIR/sgd_controls_matched_${PRESET}_s$FIRST")
fi
if [ "$TRAINABLE" = 1 ]; then
  STAGES+=("SGD controls at learning rates where SGD trains, seed $FIRST|experiments/sgd_controls/run_study.py --preset $PRESET --seed $FIRST --decay trainable --out-dir $DIR/sgd_controls_trainable_${PRESET}_s$FIRST")
fi
if [ "$REHEAT" = 1 ]; then
  for stage in reheat summary; do
    STAGES+=("β2 sweep $stage, seed $FIRST|experiments/beta_sweep/run_study.py $stage --preset $PRESET --seed $FIRST --out-dir $DIR/beta_sweep_${PRESET}_s$FIRST")
  done
fi

echo "studies of preset $PRESET for seeds $SEEDS into $DIR: ${#STAGES[@]} stages"
if [ "$DRY" = 1 ]; then
  for st in "${STAGES[@]}"; do echo "  ${st#*|} ${EXTRA[*]-}"; done
  echo "  then, when $DIR/${PRESET}_seeds has every seed finished: scripts/run_seeds.sh --preset $PRESET --seeds $SEEDS --out-dir $DIR/${PRESET}_seeds (the ledger with the studies)"
  exit 0
fi

T0=$SECONDS
for st in "${STAGES[@]}"; do
  label="${st%%|*}"; read -r -a cmd <<< "${st#*|}"
  t=$SECONDS
  echo "== $label"
  "$PY" "${cmd[@]}" --no-progress ${EXTRA[@]+"${EXTRA[@]}"} || die "stage '$label' failed (exit $?); fix the cause and run the same command again: finished stages are skipped"
  echo "== $label: $((SECONDS - t)) s"
done
echo "studies finished in $((SECONDS - T0)) s"

SEEDS_DIR="$DIR/${PRESET}_seeds"
for s in "${SEED_LIST[@]}"; do
  if ! pipeline_finished "$SEEDS_DIR/s$s"; then
    echo "the seeds' ledger does not have these studies yet: $SEEDS_DIR/s$s is not a finished pipeline; run"
    echo "  scripts/run_seeds.sh --preset $PRESET --seeds $SEEDS --out-dir $SEEDS_DIR"
    echo "(it trains the seeds' pipelines, then writes the ledger with every study found in $DIR)"
    exit 0
  fi
done
scripts/run_seeds.sh --preset "$PRESET" --seeds "$SEEDS" --out-dir "$SEEDS_DIR"
