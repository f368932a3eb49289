"""A progress line on stderr for commands that read large files (`validate`, `doctor`).

Shown only when stderr is a terminal: a person waiting sees the row count climb, while scripts, logs
and pipes (stderr redirected) get nothing but errors, so their output does not depend on timing. The
line is rewritten in place at most every `interval_s` seconds and erased when the command finishes
or fails, before anything else is printed.
"""

from __future__ import annotations

import sys
import time

UPDATE_INTERVAL_S = 0.5  # often enough to look alive, rare enough to cost nothing per row
_ERASE = "\r\x1b[K"  # carriage return, then ANSI "erase to end of line"


class Progress:
    def __init__(self, command: str, stream=None, interval_s: float = UPDATE_INTERVAL_S, enabled: bool | None = None,
                 quiet: bool = False):
        self.command = command
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty()) and not quiet
        self.enabled = enabled
        self.interval_s = interval_s
        self.started = time.monotonic()
        self._last = float("-inf")
        self._shown = False

    def update(self, rows: int, what: str = "rows") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        self._last = now
        self.stream.write(f"{_ERASE}planner {self.command}: {rows:,} {what} ({now - self.started:.0f} s)")
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            self.stream.write(_ERASE)
            self.stream.flush()
            self._shown = False
