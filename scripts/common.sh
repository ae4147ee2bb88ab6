# Sourced by the pipeline scripts (run_seed.sh, run_seed_auto.sh, run_seeds.sh, run_studies.sh): their one-line
# error, their help text, the interpreter and the checked seed list, written once.

# one `error:` line on stderr, exit status 2
die() { echo "error: $*" >&2; exit 2; }
# the calling script's header comment (its lines after the shebang, up to the first line that is not a comment)
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
# Scripts import `training` from this checkout, also with an interpreter that has not installed it (make install)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# parse_seeds TEXT: SEED_LIST=(the comma-separated seeds of TEXT), or die on an empty list, a non-integer or a repeat
parse_seeds() {
  IFS=',' read -r -a SEED_LIST <<< "$1"
  [ ${#SEED_LIST[@]} -ge 1 ] || die "--seeds is empty"
  local -A seen=()
  local s
  for s in "${SEED_LIST[@]}"; do
    [[ "$s" =~ ^[0-9]+$ ]] || die "--seeds must be non-negative integers separated by commas (got '$1')"
    [ -z "${seen[$s]:-}" ] || die "--seeds lists $s twice"
    seen[$s]=1
  done
}

# pipeline_finished RUN_DIR: true when scripts/run_seed.sh has finished every stage of RUN_DIR
pipeline_finished() { [ -f "$1/.stages/17_report.done" ]; }

# check_trials VALUE: die unless VALUE (of --basin-trials) is a positive integer
check_trials() { [[ "$1" =~ ^[1-9][0-9]*$ ]] || die "--basin-trials must be a positive integer (got '$1')"; }
# basin_trials RUN_DIR: the trials per (checkpoint, σ) of RUN_DIR's basin-depth result (0 when it has none)
basin_trials() {
  "$PY" -c 'import json, sys
try: print(int(json.load(open(sys.argv[1]))["settings"]["n_trials"]))
except (OSError, ValueError, KeyError, TypeError): print(0)' "$1/analysis/basin_depth.json"
}
