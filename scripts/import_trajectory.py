"""Import a foreign checkpoint series as a run directory: the command of training/importers (`--help`)."""
import sys

from training.core.cli import run_main
from training.importers.__main__ import main

if __name__ == "__main__":
    sys.exit(run_main(main))
