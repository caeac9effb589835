"""Sphinx extension: the CLI reference, generated from the commands' own help.

``` {mmemu-cli-help}
```

renders, for the ``mmemu`` app and each of its commands, a section titled
``mmemu <command>`` holding the text ``mmemu <command> --help`` prints.  The
text comes from the cyclopts app at build time (``App.help_print`` into a
fixed-width, colourless rich console), so the page cannot drift from the
code: rename an option and the reference changes with it.
"""

from __future__ import annotations

import io
from typing import Any

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

WIDTH = 88


def help_text(tokens: list[str]) -> str:
    """What ``mmemu <tokens> --help`` prints, at WIDTH columns, no colour."""
    from rich.console import Console

    from mmemu.cli import app

    buf = io.StringIO()
    console = Console(file=buf, width=WIDTH, color_system=None, force_terminal=False,
                      highlight=False, soft_wrap=False)
    app.help_print(tokens, console=console)
    lines = [line.rstrip() for line in buf.getvalue().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


def commands() -> list[str]:
    """The app's commands in the order they were defined (no --help/--version)."""
    from mmemu.cli import app

    return [name for name in app if not name.startswith("-")]


class CliHelp(SphinxDirective):
    has_content = False

    def run(self) -> list[Any]:
        self.env.note_dependency(__file__)
        out: list[Any] = []
        for cmd in [None, *commands()]:
            title = "mmemu" if cmd is None else f"mmemu {cmd}"
            section_id = nodes.make_id("cli-" + (cmd or "mmemu"))
            section = nodes.section(ids=[section_id], names=[nodes.fully_normalize_name(title)])
            section += nodes.title(title, "", nodes.literal(title, title))
            text = help_text([] if cmd is None else [cmd])
            block = nodes.literal_block(text, text)
            block["language"] = "text"
            section += block
            self.state.document.note_implicit_target(section, section)
            out.append(section)
        return out


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("mmemu-cli-help", CliHelp)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
