"""Writing the files ``-o`` names."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ._app import UsageError

def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same
    directory and ``os.replace``: a reader (or an interrupted run) never
    sees half a file.  Any OSError becomes one line for the user."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise UsageError(f"cannot write {str(target)!r}: it is a directory")
    if not parent.is_dir():
        raise UsageError(f"cannot write {str(target)!r}: directory {str(parent)!r} does not exist")
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp_name, target)
        tmp_name = None
    except OSError as exc:
        raise UsageError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


