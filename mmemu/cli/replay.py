"""``mmemu replay``, ``mmemu trace`` and ``mmemu report``: one execution from
its token, as a report, a Perfetto trace or an HTML page."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

from cyclopts import Parameter

from mmemu.engine import MmemuError, get_scenario, replay
from mmemu.engine._locate import display_name
from mmemu.engine._schedule import Schedule

from ._app import EXIT_FAILURE, EXIT_OK, _out, app
from ._output import write_output

def _replay_token(token: str) -> tuple[Schedule, Any]:
    """Decode and replay ``token`` (errors propagate as ScheduleFormatError
    or MmemuError, which main() turns into one line and exit 2)."""
    sched = Schedule.from_token(token)
    return sched, replay(None, token)


def _run_title(sched: Schedule) -> str:
    title = display_name(sched.scenario)
    if sched.params:
        title += " [" + ", ".join(f"{k}={v}" for k, v in sorted(sched.params.items())) + "]"
    if sched.mutants:
        title += " with mutant " + ", ".join(sched.mutants)
    return title


@app.command(name="replay")
def replay_(token: str, *, json_: Annotated[bool, Parameter(name="--json")] = False) -> int:
    """Replay one execution exactly from its token and print its report.

    Example: mmemu replay mm1.eNqrVkpW...
    """
    sched = Schedule.from_token(token)
    outcome = replay(None, token)
    out = _out()
    if json_:
        out.print(json.dumps({"suite": sched.scenario, "driver": sched.params.get("driver"),
                              "mutant": ",".join(sched.mutants) or None,
                              "params": sched.params, "steps": outcome.steps,
                              "preemptions": outcome.preemptions,
                              "failure": outcome.failure.to_json() if outcome.failure else None}))
    elif outcome.failure is not None:
        out.print(outcome.failure.report(), markup=False)
    else:
        out.print(f"{display_name(sched.scenario)}: the schedule ran {outcome.steps} steps without failing")
    return EXIT_FAILURE if outcome.failure is not None else EXIT_OK


OutputPath = Annotated[Path, Parameter(name=["--output", "-o"],
                                       help="file to write (atomically; through a symlink; "
                                            "'-' for stdout)")]


@app.command
def trace(token: str, *, output: OutputPath) -> int:
    """Export an execution as Chrome Trace Event JSON for ui.perfetto.dev.

    One track per CPU, slices for kernel functions, an instant per step
    (with its reads, writes and conflicts), flow arrows and counters from the
    model's trace annotations; ts is the step index.

    Example: mmemu trace mm1.eNqrVkpW... -o race.json
    """
    from mmemu._perfetto import chrome_trace_json

    sched, outcome = _replay_token(token)
    failure = outcome.failure
    meta: dict[str, Any] = {"scenario": sched.scenario, "params": sched.params,
                            "mutants": list(sched.mutants), "token": token.strip(),
                            "steps": outcome.steps, "preemptions": outcome.preemptions}
    if failure is not None:
        meta["failure"] = failure.to_json()
    text = chrome_trace_json(failure.trace if failure is not None else outcome.trace,
                             failure=failure, title=_run_title(sched), metadata=meta)
    where = write_output(output, text)
    print(f"wrote {'to ' if where == 'stdout' else ''}{where} ({outcome.steps} steps"
          + (f", {failure.kind}" if failure is not None else ", no failure")
          + "); open it at https://ui.perfetto.dev", file=sys.stderr)
    return EXIT_OK


@app.command
def report(token: str, *, output: OutputPath) -> int:
    """Draw an execution as one self-contained HTML page of swimlanes.

    A lane per CPU, steps in order, preemptions marked, the failing step and
    the steps touching the violated object highlighted; hover a step for its
    accesses and the failure's object dump.

    Example: mmemu report mm1.eNqrVkpW... -o race.html
    """
    from mmemu._explain import protocol_text
    from mmemu._html_report import render_report

    sched, outcome = _replay_token(token)
    failure = outcome.failure
    try:
        protocol = protocol_text(get_scenario(sched.scenario))
    except MmemuError:
        protocol = ""  # a module:qualname scenario has no registered doc
    page = render_report(failure.trace if failure is not None else outcome.trace,
                         failure=failure, title=_run_title(sched),
                         replay_command=f"mmemu replay {token.strip()}", protocol=protocol)
    where = write_output(output, page)
    print(f"wrote {'to ' if where == 'stdout' else ''}{where} ({outcome.steps} steps"
          + (f", {failure.kind}" if failure is not None else ", no failure") + ")", file=sys.stderr)
    return EXIT_OK


