"""Session-wide test setup."""

from __future__ import annotations

import signal

# A test run started in the background of a non-interactive shell
# (`cmd &`) inherits SIGINT as ignored, and Python then never raises
# KeyboardInterrupt -- nor do the mmemu subprocesses the CLI tests start,
# since an ignored signal survives exec.  The Ctrl-C tests need the
# interactive default, so restore it for the whole session.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
