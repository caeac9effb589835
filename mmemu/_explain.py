"""``mmemu explain NAME``: a suite's protocol, or a mutant and the interleaving that breaks it.

For a suite, the text is its registered docstring, printed as the kernel
prints a protocol comment (``/* ... */`` with a ``*`` margin): authors write
it as numbered steps per side and "There are N critical interleavings that
matter:", and the step labels use the same numbers, so the comment, the
trace and the failure report speak the same words.  When the scenario's own
docstring has no numbered steps (the demo keeps its protocol in the module
docstring, where the code lives), the defining module's docstring is used
as well.  Then come the mutants the suite must catch and, for a teaching
scenario that fails on purpose (``expect="fail"``), its minimal failing
timeline.

For a mutant, the text is its documentation, the suites that must catch it
and, for each, the minimal interleaving that breaks it: the suite explored
with the mutant on by a DFS bounded at two preemptions (the shrinker then
minimises what it finds), and its ``Failure.report()``.

Everything here is deterministic: the DFS has no seed, and the reports use
step indices, not time.
"""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Callable
from typing import Any

from mmemu.engine import (
    DFS,
    ModelError,
    Mutant,
    Scenario,
    all_mutants,
    all_scenarios,
    explore,
    get_mutant,
)
from mmemu._interleavings import get_interleaving, interleavings_of
from mmemu.engine import render_timeline
from mmemu.engine._registry import _suggest

#: executions per (suite, parameter combination) when looking for the
#: minimal breaking interleaving; DFS at <= 2 preemptions finds the
#: documented races of small suites well within it.
DEFAULT_BUDGET = 1000
MAX_PREEMPTIONS = 2

_NUMBERED = re.compile(r"(?m)^\s*\d+[.)]\s+\S")


def kernel_comment(title: str, body: str) -> str:
    """``body`` as a kernel block comment headed by ``title``.

    reST markup the docstrings use is softened for a terminal: ``literal``
    loses its backquotes and a paragraph ending in ``::`` ends in ``:``.
    """
    text = textwrap.dedent(body).strip("\n")
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = re.sub(r"(?m)(\S)::$", r"\1:", text)
    text = re.sub(r"(?m)^\s*::$", "", text)
    lines = ["/*", f" * {title}"]
    if text:
        lines.append(" *")
        lines += [(" * " + ln).rstrip() for ln in text.splitlines()]
    lines.append(" */")
    return "\n".join(lines)


def protocol_text(sc: Scenario) -> str:
    """The protocol a scenario documents (see the module docstring)."""
    doc = sc.doc or ""
    if _NUMBERED.search(doc):
        return doc
    module = sys.modules.get(getattr(sc.fn, "__module__", "") or "")
    mdoc = (getattr(module, "__doc__", None) or "").strip()
    if mdoc and _NUMBERED.search(mdoc):
        return (doc + "\n\n" + mdoc).strip() if doc else mdoc
    return doc


def _params_label(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))


def minimal_failure(sc: Scenario, *, mutants: tuple[str, ...] = (), budget: int = DEFAULT_BUDGET,
                    progress: Callable[[str], None] | None = None) -> tuple[Any, dict[str, Any], int]:
    """Explore ``sc`` (each parameter combination in turn, with ``mutants``
    on) by DFS bounded at two preemptions; return (failure or None, its
    parameters, executions spent)."""
    spent = 0
    for params in sc.combinations():
        if progress is not None:
            progress(f"exploring {sc.name}" + (f" [{_params_label(params)}]" if params else "")
                     + (f" with mutant {', '.join(mutants)}" if mutants else "")
                     + f" (dfs, <= {MAX_PREEMPTIONS} preemptions, {budget} executions)")
        res = explore(sc, strategy=DFS(max_preemptions=MAX_PREEMPTIONS), executions=budget,
                      params=params, mutants=mutants, shrink=True)
        spent += res.executions
        if res.failure is not None:
            return res.failure, params, spent
    return None, {}, spent


def _mutant_line(name: str) -> str:
    try:
        m = get_mutant(name)
    except ModelError:
        return f"  {name}  (not registered: is its module imported?)"
    caught = f" [caught as {m.caught_as}]" if m.caught_as else ""
    return f"  {m.name}{caught}: {m.summary}"


def _without_first_line(text: str, first: str) -> str:
    """Drop the docstring's summary line when the title already shows it."""
    lines = text.strip().splitlines()
    if first and lines and lines[0].strip() == first.strip():
        return "\n".join(lines[1:]).strip("\n")
    return text


def explain_scenario(sc: Scenario, *, budget: int = DEFAULT_BUDGET,
                     progress: Callable[[str], None] | None = None) -> str:
    title = f"{sc.name} - {sc.summary}" if sc.summary else sc.name
    out: list[str] = [kernel_comment(title, _without_first_line(protocol_text(sc), sc.summary)), ""]
    axes = "; ".join(f"{a}: {', '.join(map(str, sc.axis_values(a)))}" for a in sorted(sc.axes))
    bound = "unbounded" if sc.max_preemptions is None else f"<= {sc.max_preemptions}"
    out.append(f"suite {sc.name}: expected to {sc.expect} on the correct model; budget "
               f"{sc.strategy}, {sc.executions} executions, {bound} preemptions"
               + (f"; parameters {axes}" if axes else ""))
    out.append("")
    if sc.catches:
        out.append(f"Mutants it must catch ({len(sc.catches)}):")
        out += [_mutant_line(m) for m in sc.catches]
        out.append("(mmemu explain MUTANT shows the interleaving that breaks each one)")
    else:
        out.append("Mutants it must catch: none registered.")
    named = interleavings_of(sc.name)
    if named:
        out += ["", f"Interleavings the protocol pages draw ({len(named)}):"]
        out += [f"  {il.number}. {il.title}" + (f" (mutant {', '.join(il.mutants)})" if il.mutants else "")
                + f": {il.command}" for il in named]
    if sc.expect == "fail":
        out += ["", "This teaching scenario is broken on purpose; its minimal failing interleaving:", ""]
        failure, _params, spent = minimal_failure(sc, budget=budget, progress=progress)
        if failure is None:
            out.append(f"  (no failure found in {spent} executions of a DFS bounded at "
                       f"{MAX_PREEMPTIONS} preemptions)")
        else:
            out.append(failure.report())
    return "\n".join(out).rstrip() + "\n"


def explain_mutant(m: Mutant, *, budget: int = DEFAULT_BUDGET,
                   progress: Callable[[str], None] | None = None) -> str:
    out: list[str] = [kernel_comment(f"mutant {m.name} - {m.summary}",
                                     _without_first_line(m.doc, m.summary)), ""]
    if m.caught_as:
        out.append(f"Expected to be caught as: {m.caught_as}")
    suites = [sc for sc in all_scenarios() if m.name in sc.catches]
    if not suites:
        out.append("No suite lists this mutant in its 'catches': nothing is meant to catch it yet.")
        return "\n".join(out).rstrip() + "\n"
    out.append("Suites that must catch it: " + ", ".join(sc.name for sc in suites))
    for sc in suites:
        out += ["", f"--- {sc.name} with mutant {m.name}: the minimal interleaving that breaks it", ""]
        failure, _params, spent = minimal_failure(sc, mutants=(m.name,), budget=budget, progress=progress)
        if failure is None:
            out.append(f"  NOT CAUGHT: no failure in {spent} executions of a DFS bounded at "
                       f"{MAX_PREEMPTIONS} preemptions (try mmemu run {sc.name} --mutant {m.name} "
                       f"--executions N)")
            continue
        out.append(failure.report())
        if m.caught_as and failure.kind != m.caught_as and m.caught_as not in failure.message:
            out.append(f"(note: documented as caught as {m.caught_as}, found {failure.kind})")
    return "\n".join(out).rstrip() + "\n"


def explain_interleaving(suite: str, number: int) -> tuple[str, bool]:
    """``mmemu explain SUITE --interleaving N``: the named interleaving
    forced, every step of it, and its outcome.  Returns the text and whether
    the outcome is the one the catalogue (and the page) says."""
    il = get_interleaving(suite, number)
    outcome = il.force()
    failure = outcome.failure
    params = f" [{_params_label(il.params)}]" if il.params else ""
    head = f"{il.suite}{params}, interleaving {il.number}: {il.title}"
    if il.mutants:
        head += f" (with mutant {', '.join(il.mutants)})"
    out = [head, f"  {il.story}.", "",
           "Forced order (the steps that matter, by CPU and label; the others run "
           "whenever it allows):"]
    out += [f"  {k}. {cpu}: {label}" for k, (cpu, label) in enumerate(il.order, 1)]
    plural = "" if outcome.preemptions == 1 else "s"
    out += ["", f"{outcome.steps} steps, {outcome.preemptions} preemption{plural} "
                f"(* marks a preemption)", "",
            render_timeline(outcome.trace,
                            failure_step=failure.failure_step if failure is not None else None),
            ""]
    if failure is not None:
        out.append(f"{failure.kind}: {failure.message}")
        if failure.details:
            out.append(failure.details.rstrip())
        out += ["", "replay with:", f"  {failure.replay_command()}"]
    else:
        out.append("No failure: the protocol holds in this interleaving.")
    wrong = il.check(outcome)
    if wrong is not None:
        out += ["", f"NOT AS DOCUMENTED: {wrong}"]
    return "\n".join(out).rstrip() + "\n", wrong is None


def explain(name: str, *, budget: int = DEFAULT_BUDGET,
            progress: Callable[[str], None] | None = None) -> str:
    """The explanation of a suite or a mutant named ``name``.

    Raises ModelError naming the closest suites and mutants if neither
    exists (scenario and mutant names share the ``area:name`` form, so both
    registries are searched; a suite wins a tie)."""
    if budget < 1:
        raise ModelError(f"'budget' must be at least 1 (got {budget})")
    scenarios = {sc.name: sc for sc in all_scenarios()}
    if name in scenarios:
        return explain_scenario(scenarios[name], budget=budget, progress=progress)
    mutants = {mu.name: mu for mu in all_mutants()}
    if name in mutants:
        return explain_mutant(mutants[name], budget=budget, progress=progress)
    # the registry's own difflib hints, over both kinds of name
    hint = _suggest(name, [*scenarios, *mutants])
    raise ModelError(f"unknown suite or mutant {name!r}{hint}; "
                     f"'mmemu list --mutants' shows them")


__all__ = ["DEFAULT_BUDGET", "explain", "explain_interleaving", "explain_mutant", "explain_scenario",
           "kernel_comment", "minimal_failure", "protocol_text"]
