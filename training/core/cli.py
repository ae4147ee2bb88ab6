"""Shared entry-point wrapper: a UserError becomes one line on stderr and exit status 2."""
from __future__ import annotations

import sys
from typing import Callable

from training.core.errors import UserError


def run_main(main: Callable[[], int]) -> int:
    try:
        return main() or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
