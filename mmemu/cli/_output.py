"""Writing the files ``-o`` names.

``-o FILE`` writes atomically: the text goes to a temporary file in the
target's directory, then ``os.replace`` puts it in place, so a reader (or an
interrupted run) never sees half a file.  Around that:

- ``-o -`` writes to stdout;
- a symlink is followed: the link stays, its target is replaced (as ``>``
  in a shell would write through it);
- anything that is not a regular file (a FIFO, a device, a socket, a
  directory) is refused with one line: replacing ``/dev/null`` or a named
  pipe with a regular file is never what was meant;
- a new file gets the mode the umask gives (``0666 & ~umask``, as ``open``
  would), not ``mkstemp``'s 0600; a replaced file keeps its mode.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

from ._app import UsageError


def _umask() -> int:
    # os.umask can only be read by setting it; the CLI is single-threaded
    # when it writes its output, so setting it back at once is safe.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_output(path: Path | str, text: str) -> str:
    """Write ``text`` to ``path`` as described in the module docstring and
    return how to name the destination in a message (``stdout`` for ``-``).
    Any OSError becomes one line for the user."""
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return "stdout"
    given = Path(path)
    # follow symlinks (and their chains) to the file that will really change
    target = Path(os.path.realpath(given))
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise UsageError(f"cannot write {str(given)!r}: {exc.strerror or exc}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise UsageError(f"cannot write {str(given)!r}: it is a directory")
        if not stat.S_ISREG(st.st_mode):
            kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else
                    "a character device" if stat.S_ISCHR(st.st_mode) else
                    "a block device" if stat.S_ISBLK(st.st_mode) else
                    "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
            raise UsageError(f"cannot write {str(given)!r}: it is {kind}, not a regular file "
                             f"(use '-o -' for stdout)")
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"cannot write {str(given)!r}: directory {str(parent)!r} does not exist")
    mode = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask()
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            os.fchmod(fh.fileno(), mode)
        os.replace(tmp_name, target)
        tmp_name = None
    except OSError as exc:
        raise UsageError(f"cannot write {str(given)!r}: {exc.strerror or exc}") from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    return str(given)
