"""Run a script of this checkout without installing it: ``python _paths.py SCRIPT [ARGS...]``.

The scripts (``training/pilot.py``, ``analysis/*/*.py``, ``experiments/*/*.py``, ``figures/*.py``,
``benchmarks/*.py``) import ``training`` and ``figures`` as installed packages, with plain imports at the top.
``make install`` (it runs ``pip install -e .``) installs this checkout in editable mode, after which every
script runs as ``python analysis/x/y.py ...`` from any working directory and sees edits at once.

Where the checkout is not installed (another interpreter, a copy without a virtual environment), this file is
the fallback: ``python path/to/checkout/_paths.py analysis/backbone/trajectory_pca.py --run-dir runs/quick``
puts the checkout's root first on ``PYTHONPATH`` and runs the script exactly as ``python SCRIPT ARGS`` would,
so that its own subprocesses find ``training`` too. SCRIPT is taken relative to the working directory, or
else to the checkout's root. ``PYTHONPATH=path/to/checkout python SCRIPT ARGS`` is the same thing by hand; the
shell pipelines (``scripts/*.sh``, ``experiments/beta_sweep/run_beta2.sh``) set it themselves.
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
USAGE = "usage: python _paths.py SCRIPT [ARGS...]   (e.g. python _paths.py training/pilot.py --preset quick)"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    script = Path(argv[0])
    if not script.is_file() and (ROOT / script).is_file():
        script = ROOT / script
    if not script.is_file():
        print(f"error: no script {argv[0]} here or under {ROOT} (e.g. analysis/backbone/trajectory_pca.py)",
              file=sys.stderr)
        return 2
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    os.execv(sys.executable, [sys.executable, str(script), *argv[1:]])
    return 0  # not reached: execv replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
