"""The one exception type for problems the user can fix (bad flags, configs, paths, files).

Command-line entry points catch :class:`UserError` and print its message as a single line on stderr
before exiting with status 2, so a mistake never ends in a traceback.
"""


class UserError(Exception):
    """A problem with the user's input, with a one-line message that says how to fix it."""


def fail(message: str) -> None:
    """Raise a :class:`UserError` with ``message`` (a small convenience for validation code)."""
    raise UserError(message)
