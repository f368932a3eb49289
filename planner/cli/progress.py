"""Progress on stderr for the commands that take more than a moment (tqdm): count, rate and, where the
total is known, an ETA.

Shown only when stderr is a terminal and --quiet is not given: a person waiting sees the work advance,
while scripts, logs and pipes (stderr redirected) get nothing but status and errors, so their output does
not depend on timing. The line is rewritten in place at most every `interval_s` seconds and erased when
the command finishes or fails, before anything else is printed.

    with Progress("calibrate", unit="fits", quiet=args.quiet) as progress:
        calibrate(..., progress=progress)      # the work calls progress(done, total)
"""

from __future__ import annotations

import math
import re
import shutil
import sys

from tqdm import tqdm

UPDATE_INTERVAL_S = 0.5  # often enough to look alive, rare enough to cost nothing per row
# "planner optimize:  50%|#####     | 58/117 cells [00:01<00:01]" (elapsed<ETA) once the total is known;
# "planner validate: 2000 rows [00:01]" while it is not.
WITH_TOTAL = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}]"
WITHOUT_TOTAL = "{desc}: {n_fmt} {unit} [{elapsed}]"


class Progress:
    def __init__(self, command: str, stream=None, interval_s: float = UPDATE_INTERVAL_S, enabled: bool | None = None,
                 quiet: bool = False, unit: str = "rows", total: int | None = None):
        stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(stream, "isatty", None)
            enabled = bool(isatty and isatty()) and not quiet
        self.enabled = enabled
        # A terminal that reports no size (a bare pseudo-terminal) would make tqdm print nothing: 80x24 then.
        size = shutil.get_terminal_size()
        self._bar = tqdm(total=total, desc=f"planner {command}", unit=unit, file=stream, disable=not enabled,
                         leave=False, mininterval=interval_s, miniters=1, ncols=size.columns, nrows=size.lines,
                         bar_format=WITHOUT_TOTAL if total is None else WITH_TOTAL)

    def __call__(self, done: int, total: int | None = None) -> None:
        """`done` of `total` units finished (absolute counts; the total may be learned late or change)."""
        if not self.enabled:
            return
        if total is not None and total != self._bar.total:
            self._bar.total, self._bar.bar_format = total, WITH_TOTAL
            self._bar.refresh()
        self._bar.update(done - self._bar.n)

    def update(self, rows: int) -> None:  # the interface validate and doctor stream rows through
        self(rows)

    def done(self) -> None:
        self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.done()


def time_left(seconds: float) -> str:
    """An estimate of the time left, to the precision an estimate has: whole seconds under a minute ('22 s',
    not '22.240 s'), then the unit that reads best ('1.5 min', '2.25 h', as report.render.human_days)."""
    from planner.report.render import human_days

    if not math.isfinite(seconds):
        return "-"
    if seconds < 59.5:
        return f"{max(1, round(seconds))} s"
    return human_days(seconds / 86400.0)


def with_time_left(line: str, elapsed_s: float) -> str:
    """A sweep line "[i/N] ...": with the time the remaining N - i items take at the pace so far."""
    position = re.match(r"\[(\d+)/(\d+)\]", line)
    if not position or not 0 < int(position.group(1)) < int(position.group(2)):
        return line
    done, total = int(position.group(1)), int(position.group(2))
    return line + f"; about {time_left(elapsed_s / done * (total - done))} left"
