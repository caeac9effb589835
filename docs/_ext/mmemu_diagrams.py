"""Sphinx extension: the protocol pages' interleaving diagrams, drawn from the model.

``` {mmemu-interleaving} pagecache:lookup-vs-reclaim 1
```

forces interleaving 1 of the suite (``mmemu._interleavings``), exactly as
``mmemu explain pagecache:lookup-vs-reclaim --interleaving 1`` does, and puts
its timeline on the page as an inline SVG (``mmemu._svg``), with the outcome
and that command under it.  Nothing is loaded from the network and nothing
is drawn by hand: the diagram is the execution, so it cannot drift from the
model.  An interleaving that no longer happens as written, or no longer ends
as the catalogue says, fails the build (``-W`` turns the warning into an
error).
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from sphinx import addnodes
from sphinx.util.docutils import SphinxDirective


class InterleavingDiagram(SphinxDirective):
    required_arguments = 2  # SUITE N
    has_content = False

    def run(self) -> list[Any]:
        from mmemu import _interleavings, _svg
        from mmemu.engine import MmemuError, render_timeline

        self.env.note_dependency(_interleavings.__file__)
        self.env.note_dependency(_svg.__file__)
        suite, number = self.arguments[0], self.arguments[1]
        try:
            il = _interleavings.get_interleaving(suite, int(number))
            outcome = il.force()
        except (MmemuError, ValueError) as exc:
            raise self.error(f"mmemu-interleaving {suite} {number}: {exc}") from None
        wrong = il.check(outcome)
        if wrong is not None:
            raise self.error(f"mmemu-interleaving: {wrong}")
        failure = outcome.failure
        container = nodes.container(classes=["mmemu-interleaving"])
        svg = il.svg(outcome)
        container += nodes.raw("", f'<div class="mmemu-diagram">{svg}</div>', format="html")
        # other builders (text, latex) get the full timeline as text
        text = render_timeline(outcome.trace,
                               failure_step=failure.failure_step if failure is not None else None)
        only = addnodes.only(expr="not html")
        only += nodes.literal_block(text, text)
        container += only
        verdict = (f"{failure.kind}: {failure.message}" if failure is not None
                   else "no failure: the protocol holds")
        para = nodes.paragraph()
        para += nodes.strong(text=f"{il.title}.")
        para += nodes.Text(f" {il.story}. Outcome: {verdict}. "
                           f"Watch every step with ")
        para += nodes.literal(text=il.command)
        para += nodes.Text(".")
        container += para
        return [container]


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("mmemu-interleaving", InterleavingDiagram)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
