"""Safe file output shared by every command that writes: atomic, never half-written.

Outputs are written to a temporary file in the target folder and renamed into place, so a
crash or Ctrl-C never leaves a truncated profile, spec or report. An existing file is only
replaced when the caller says `force=True`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from planner.errors import PlannerInputError


def write_text_atomic(path: str | os.PathLike, text: str, force: bool = False, flag: str = "--force") -> Path:
    """Write `text` to `path` atomically; refuse to overwrite unless `force`."""
    target = Path(path)
    if target.exists() and not force:
        raise PlannerInputError(f"{target}: already exists; pass {flag} to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target


def write_bytes_atomic(path: str | os.PathLike, data: bytes, force: bool = False, flag: str = "--force") -> Path:
    """Binary twin of `write_text_atomic` (plots, archives)."""
    target = Path(path)
    if target.exists() and not force:
        raise PlannerInputError(f"{target}: already exists; pass {flag} to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target
