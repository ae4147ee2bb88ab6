"""Shared entry-point wrapper: every command's failure ends in one line on stderr.

* a :class:`UserError` (bad flags, configs, paths, files) -> ``error: <message>``, exit status 2;
* an ``OSError`` (a read-only or full disk, a missing permission, a path that is a file) ->
  ``error: <path>: <cause>`` and what to do about it, exit status 2: these are the machine's state, not bugs;
* Ctrl-C -> ``interrupted``, exit status 130.

Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import errno
import math
import sys
from typing import Callable

from training.core.errors import UserError

# what to do about the operating-system errors a user meets
_HINTS = {
    errno.ENOSPC: "free some space, then run the same command again (training continues exactly with --resume)",
    errno.EDQUOT: "free some space, then run the same command again (training continues exactly with --resume)",
    errno.EROFS: "the file system is read-only; analyses, figures and the report can write elsewhere with --out-dir DIR",
    errno.EACCES: "no permission; analyses, figures and the report can write elsewhere with --out-dir DIR",
    errno.EPERM: "no permission; analyses, figures and the report can write elsewhere with --out-dir DIR",
    errno.ENOTDIR: "a folder on this path is a file",
    errno.EISDIR: "this is a directory, where a file was expected",
}


def os_error_line(e: OSError) -> str:
    """One line for an operating-system error: the path(s), the cause, and the remedy where there is one."""
    where = ": ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
    cause = e.strerror or str(e)
    hint = _HINTS.get(e.errno)
    return f"{where + ': ' if where else ''}{cause}" + (f" ({hint})" if hint else "")


def show(x, spec: str = ".3g", missing: str = "—") -> str:
    """A number for a printed line or table: ``format(x, spec)``, or ``missing`` for None and non-finite floats."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return missing
    return format(x, spec)


def run_main(main: Callable[[], int]) -> int:
    try:
        return main() or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


class CommandParser(argparse.ArgumentParser):
    """The argument parser of every command: a flag mistake is a one-line UserError (exit 2 through
    :func:`run_main`) rather than argparse's usage block; ``--help`` prints the usage as usual."""

    def error(self, message: str):
        raise UserError(f"{message} (see --help)")
