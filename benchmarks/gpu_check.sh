#!/usr/bin/env bash
# The GPU check of the performance issue, as one command: benchmarks/gpu_check.py under a time limit.
#   benchmarks/gpu_check.sh            on a machine with one NVIDIA GPU: at most 8 minutes
#   benchmarks/gpu_check.sh --dry-run  every part at the test shape on the CPU (seconds; tested in CI)
# Other arguments go to gpu_check.py (--parts, --run-vocab, --workdir, --out). Writes one JSON ($OUT/gpu_check.json
# when $OUT is set, else benchmarks/results/gpu_check.json) and prints one table.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
LIMIT=${GPU_CHECK_LIMIT_S:-480}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
rc=0
timeout --foreground "$LIMIT" "$PY" benchmarks/gpu_check.py "$@" || rc=$?
if [ "$rc" -eq 124 ]; then
    echo "error: gpu_check ran past its limit of ${LIMIT} s (GPU_CHECK_LIMIT_S); rerun with --parts to split it" >&2
fi
exit "$rc"
