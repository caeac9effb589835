"""``main``: run the app, turn bad input into one line and exit 2, configure logging."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import cyclopts

from mmemu.engine import MmemuError, ScheduleFormatError

from ._app import EXIT_OK, EXIT_USAGE, UsageError, app

_LOG_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def _configure_logging(args: list[str]) -> list[str]:
    """Configure structlog for the command (the library never does) and
    return ``args`` without the global ``--verbose`` flag.

    Quiet by default (warnings and errors only); ``--verbose`` anywhere
    before ``--``, or ``MMEMU_LOG=debug|info|warning|error``, lowers the
    level so the engine's lifecycle events (exploration started/finished,
    failure found) show on stderr.  Taking the flag out here keeps it global
    without repeating it on every command.
    """
    import structlog

    end = args.index("--") if "--" in args else len(args)
    verbose = any(a in ("--verbose", "-v") for a in args[:end])
    if verbose:
        args = [a for i, a in enumerate(args) if i >= end or a not in ("--verbose", "-v")]
    env = os.environ.get("MMEMU_LOG", "").strip().lower()
    if env and env not in _LOG_LEVELS:
        raise UsageError(f"MMEMU_LOG must be one of {', '.join(_LOG_LEVELS)} (got {env!r})")
    level = _LOG_LEVELS["debug"] if verbose else _LOG_LEVELS.get(env, _LOG_LEVELS["warning"])
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    return args


def _stdout_dash(args: list[str]) -> list[str]:
    """``-o -`` (stdout) as ``--output=-``: cyclopts reads a lone ``-`` after
    an option as a missing value."""
    out: list[str] = []
    i = 0
    while i < len(args):
        if args[i] in ("-o", "--output") and i + 1 < len(args) and args[i + 1] == "-":
            out.append("--output=-")
            i += 2
            continue
        if args[i] == "--":
            out.extend(args[i:])
            break
        out.append(args[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns (and exits with) the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    import structlog

    # main() may be called in-process (tests, embedding): put the caller's
    # structlog configuration back afterwards.
    saved_logging = structlog.get_config() if structlog.is_configured() else None
    try:
        args = _stdout_dash(_configure_logging(args))
        code = app(args, exit_on_error=False, print_error=False, help_on_error=False,
                   result_action="return_value")
    except cyclopts.CycloptsError as exc:
        msg = str(exc).strip().splitlines()
        print(f"mmemu: error: {' '.join(m.strip() for m in msg if m.strip()) or type(exc).__name__}",
              file=sys.stderr)
        code = EXIT_USAGE
    except (UsageError, ScheduleFormatError) as exc:
        print(f"mmemu: error: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    except MmemuError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"mmemu: error: {first}", file=sys.stderr)
        code = EXIT_USAGE
    except KeyboardInterrupt:
        print("mmemu: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        # the reader went away (mmemu explain ... | head): not an error worth a traceback
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open until exit
        except OSError:
            pass
        code = EXIT_OK
    finally:
        if saved_logging is not None:
            structlog.configure(**saved_logging)
        else:
            structlog.reset_defaults()
    if code is None:
        code = EXIT_OK
    if argv is None:
        sys.exit(int(code))
    return int(code)


