#!/usr/bin/env bash
# Pick a seed whose run oscillates, then run the whole per-seed pipeline on it.
#
#   scripts/run_seed_auto.sh [--seeds 137,271,314] [--preset quick|cpu|paper|test] [--fallback]
#                            [--scout-root DIR] [--out-dir RUN] [--until STAGE] [extra training flags]
#
# For each seed in order: a short scout run (the paper's 2,000 of 10,000 steps, scaled to the preset, with
# an evaluation every 100 scaled steps and the initial probe weight only) is trained into its own directory
# runs/scout_<preset>_s<seed> (never into the real run directory), then the oscillation detector runs on it.
# The first seed whose scout shows at least one switch pair is handed to scripts/run_seed.sh. With
# --fallback the first seed is used when none oscillates; without it that case is an error (exit 1).
# Scouts are resumable and reused: running the command again skips finished scouts. --out-dir and --until
# are passed to run_seed.sh.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SEEDS="137,271,314"; PRESET=quick; FALLBACK=0; EXTRA=(); SCOUT_ROOT=runs; PIPE=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) [ $# -ge 2 ] || die "--seeds needs a value"; SEEDS="$2"; shift 2 ;;
    --preset) [ $# -ge 2 ] || die "--preset needs a value"; PRESET="$2"; shift 2 ;;
    --scout-root) [ $# -ge 2 ] || die "--scout-root needs a value"; SCOUT_ROOT="$2"; shift 2 ;;
    --fallback) FALLBACK=1; shift ;;
    --out-dir|--until) [ $# -ge 2 ] || die "$1 needs a value"; PIPE+=("$1" "$2"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done
[[ "$SEEDS" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--seeds must be comma-separated integers (got '$SEEDS')"
case "$PRESET" in quick|cpu|paper|test) ;; *) die "unknown preset '$PRESET' (choose from quick, cpu, paper, test)" ;; esac
cd "$ROOT"

# The scout's length and evaluation cadence: the paper's 2000 and 100 steps at this preset's scale.
read -r SCOUT_STEPS SCOUT_EVERY SCOUT_WARMUP < <("$PY" - "$PRESET" <<'EOF'
import sys

from training.core.config import preset
from training.studies.common import scale_step
cfg = preset(sys.argv[1])
steps = scale_step(cfg, 2000, minimum=2)
print(steps, scale_step(cfg, 100), min(cfg.warmup, steps))
EOF
)

NP=(--no-progress)
[ -t 2 ] && NP=()
CHOSEN=""
IFS=',' read -r -a SEED_LIST <<< "$SEEDS"
for seed in "${SEED_LIST[@]}"; do
  scout="$SCOUT_ROOT/scout_${PRESET}_s${seed}"
  echo "[scout] seed $seed: $SCOUT_STEPS steps into $scout"
  if [ -f "$scout/config.json" ]; then
    "$PY" training/pilot.py --resume --out-dir "$scout" "${NP[@]}" \
      || { echo "pipeline stopped: scout of seed $seed failed" >&2; exit 1; }
  else
    "$PY" training/pilot.py --preset "$PRESET" --seed "$seed" --steps "$SCOUT_STEPS" --warmup "$SCOUT_WARMUP" \
      --eval-every "$SCOUT_EVERY" --ckpt-every "$SCOUT_EVERY" --set lambda_probe2=none --lambda-step 0 \
      ${EXTRA[@]+"${EXTRA[@]}"} --out-dir "$scout" "${NP[@]}" \
      || { echo "pipeline stopped: scout of seed $seed failed" >&2; exit 1; }
  fi
  "$PY" analysis/switching/detect_oscillations.py --run-dir "$scout" "${NP[@]}" > /dev/null \
    || { echo "pipeline stopped: oscillation detection on the scout of seed $seed failed" >&2; exit 1; }
  n="$("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["pairs"]))' "$scout/oscillation_manifest.json")"
  echo "[scout] seed $seed: $n switch pair(s)"
  if [ "$n" -gt 0 ]; then CHOSEN="$seed"; break; fi
done

if [ -z "$CHOSEN" ]; then
  if [ "$FALLBACK" = 1 ]; then
    CHOSEN="${SEED_LIST[0]}"
    echo "no scout oscillated; --fallback: using seed $CHOSEN"
  else
    echo "error: none of the seeds $SEEDS oscillated in its scout run; pass --fallback to use the first anyway" >&2
    exit 1
  fi
fi
echo "[auto] chosen seed: $CHOSEN"
exec "$ROOT/scripts/run_seed.sh" "$CHOSEN" --preset "$PRESET" ${PIPE[@]+"${PIPE[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
