"""Run the code blocks of the documentation, so the docs cannot rot.

Parsed with Sybil (its MyST lexers); evaluated here, one document at a time,
in a fresh namespace and a temporary working directory:

``python`` blocks
    executed in order in the document's namespace (a later block sees the
    names an earlier one defined).  A block whose first line is
    ``# file: NAME`` is written to ``NAME`` in the working directory instead;
    when NAME is a ``test_*.py`` file it is run with pytest in a subprocess
    and must pass.

``console`` blocks
    ``$ mmemu ...`` lines run through ``mmemu.cli.main`` in this process.  A
    trailing ``# exit N`` comment states the exit status; without one the
    command must exit 0.  The lines shown under a command are its output:
    each must appear in what the command printed (stdout, then stderr), in
    order, compared with runs of whitespace collapsed; a ``...`` line skips
    any amount of output, and ``...`` inside a line matches any text.  ``$ python -m pytest ...`` lines run pytest in a
    subprocess the same way; other commands (``pip install``) are not run.

``% skip: next`` (Sybil's skip syntax, a MyST comment) before a block
leaves it out.

The working directory is a fresh temporary directory with a symlink
``examples`` to the repository's ``examples/``, so pages can run the shipped
examples by their documented paths.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from sybil import Example, Sybil
from sybil.parsers.myst import CodeBlockParser, SkipParser

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

FILE_RE = re.compile(r"\A#\s*file:\s*(\S+)\s*\n")
EXIT_RE = re.compile(r"#\s*exit\s+(\d+)\s*$")


class DocExampleError(AssertionError):
    pass


def _where(example: Example) -> str:
    path = Path(example.path)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return f"{shown}:{example.line}"


def _norm(line: str) -> str:
    return " ".join(line.split())


def evaluate_python(example: Example) -> None:
    source: str = str(example.parsed)
    m = FILE_RE.match(source)
    if m:
        name = m.group(1)
        target = Path.cwd() / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source, encoding="utf-8")
        if Path(name).name.startswith("test_"):
            _run_pytest(example, [name, "-q", "-p", "no:cacheprovider"], expected=0, shown=[])
        return
    # Run as a script would: functions defined here belong to "__main__".
    example.namespace.setdefault("__name__", "__main__")
    # Line numbers in tracebacks are the document's.
    code = compile("\n" * (example.line + example.parsed.line_offset) + source,
                   str(example.path), "exec")
    exec(code, example.namespace)


def _commands(text: str) -> list[tuple[str, int | None, list[str]]]:
    """(command, stated exit status, output lines shown) for each ``$`` line."""
    out: list[tuple[str, int | None, list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("$ "):
            if out:
                out[-1][2].append(line)
            i += 1
            continue
        cmd = line[2:]
        while cmd.endswith("\\") and i + 1 < len(lines):
            i += 1
            cmd = cmd[:-1] + " " + lines[i].strip()
        m = EXIT_RE.search(cmd)
        out.append((cmd, int(m.group(1)) if m else None, []))
        i += 1
    return out


def _matcher(want: str) -> re.Pattern[str]:
    """``...`` inside a shown line stands for any text (doctest's ELLIPSIS)."""
    return re.compile(".*".join(re.escape(part) for part in want.split("...")))


def _check_output(example: Example, cmd: str, printed: str, shown: list[str]) -> None:
    actual = [_norm(line) for line in printed.splitlines()]
    pos = 0
    skipping = False
    for want_raw in shown:
        want = _norm(want_raw)
        if not want:
            continue
        if want == "...":
            skipping = True
            continue
        pattern = _matcher(want)
        found = next((i for i in range(pos, len(actual)) if pattern.fullmatch(actual[i])), -1)
        if found < 0 or (not skipping and found != pos and any(actual[pos:found])):
            raise DocExampleError(
                f"{_where(example)}: '$ {cmd}' did not print the line\n    {want_raw.strip()}\n"
                f"where the docs show it.  It printed:\n{printed}")
        pos = found + 1
        skipping = False


def _run_mmemu(example: Example, argv: list[str], expected: int | None, cmd: str,
               shown: list[str]) -> None:
    from mmemu.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    printed = out.getvalue() + err.getvalue()
    want = 0 if expected is None else expected
    if code != want:
        raise DocExampleError(f"{_where(example)}: '$ {cmd}' exited {code}, the docs say {want}."
                              f"  It printed:\n{printed}")
    _check_output(example, cmd, printed, shown)


def _run_pytest(example: Example, args: list[str], expected: int | None,
                shown: list[str], cmd: str | None = None) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", *args], capture_output=True,
                          text=True, timeout=60, env=env)
    printed = proc.stdout + proc.stderr
    want = 0 if expected is None else expected
    what = f"'$ {cmd}'" if cmd else f"pytest on the file of this block ({args[0]})"
    if proc.returncode != want:
        raise DocExampleError(f"{_where(example)}: {what} exited {proc.returncode}, "
                              f"expected {want}:\n{printed}")
    if cmd is not None:
        _check_output(example, cmd, printed, shown)


def evaluate_console(example: Example) -> None:
    for cmd, expected, shown in _commands(str(example.parsed)):
        argv = shlex.split(cmd, comments=True)
        if not argv:
            continue
        if argv[0] == "mmemu":
            _run_mmemu(example, argv[1:], expected, cmd, shown)
        elif argv[:3] in (["python", "-m", "pytest"], ["python3", "-m", "pytest"]):
            _run_pytest(example, argv[3:] + ["-p", "no:cacheprovider"], expected, shown, cmd)
        # anything else (pip install ...) is shown, not run


SYBIL = Sybil(parsers=[
    SkipParser(),
    CodeBlockParser(language="python", evaluator=evaluate_python),
    CodeBlockParser(language="console", evaluator=evaluate_console),
])


def doc_pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.relative_to(DOCS).parts)


def run_document(path: Path) -> int:
    """Evaluate every example of ``path`` in order; returns how many ran."""
    document = SYBIL.parse(path)
    ran = 0
    for example in document.examples():
        example.evaluate()
        ran += 1
    return ran


__all__ = ["DOCS", "ROOT", "doc_pages", "run_document", "Any"]
