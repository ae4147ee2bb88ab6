"""Make ``import training`` work for scripts run as ``python analysis/x/y.py`` from any directory.

Every script starts with ``import _paths  # noqa: F401`` after inserting its repository root; the
two lines at the top of each script do that without any import hooks.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
