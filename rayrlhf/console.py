"""Whether the console is a person's terminal, and plain output when it is not.

A log redirected to a file (``rayrlhf train c.yaml > run.log``, ``ray job submit``) is read in
an editor or with ``grep``: carriage-return progress updates and colour codes only get in the way
there, so both are switched off when the console is not a terminal.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO


def is_terminal(*streams: TextIO) -> bool:
    """True when every stream (default: stdout and stderr) is an interactive terminal."""
    return all(_isatty(s) for s in streams or (sys.stdout, sys.stderr))


def _isatty(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # a closed stream, or a stand-in without isatty
        return False


def plain_when_redirected() -> None:
    """Keep colour codes out of a redirected log (an entry point calls this before Ray starts).

    Ray's driver wraps each actor's forwarded log line in ANSI colours whatever stdout is,
    unless ``RAY_COLOR_PREFIX=0``; a value the user set stands.
    """
    if not is_terminal(sys.stdout):
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
