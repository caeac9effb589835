"""Reach marks and the import hook, in this process (no worker)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from mmemu.mutate._isolate import REACHED, instrument, override_module

SRC = textwrap.dedent('''\
    def f(x):
        y = x + 1
        if x > 0:
            y += 10
        elif x < -5:
            y -= 10
        while y > 100:
            y -= 1
        return y
''')


def run(code: object, ranges: list[tuple[int, int]], x: int) -> set[int]:
    hits = bytearray(len(ranges))
    ns = {REACHED: hits}
    exec(code, ns)  # noqa: S102
    ns["f"](x)
    return {ranges[k] for k, hit in enumerate(hits) if hit}


def test_marks_go_in_front_of_the_touched_statements_only() -> None:
    # lines: 2 y = x + 1, 3 if, 4 y += 10, 5 elif, 6 y -= 10, 7 while, 8 y -= 1
    code, ranges = instrument(SRC, "m.py", [4, 5, 7])
    assert ranges == [(4, 4), (5, 5), (7, 7)]
    assert run(code, ranges, 1) == {(4, 4), (7, 7)}
    assert run(code, ranges, -10) == {(5, 5), (7, 7)}
    # the elif test is not evaluated when the if fires, nor is its mark set
    assert (5, 5) not in run(code, ranges, 3)


def test_instrumented_code_behaves_like_the_original() -> None:
    code, ranges = instrument(SRC, "m.py", range(1, 10))
    ns_plain: dict[str, object] = {}
    exec(compile(SRC, "m.py", "exec"), ns_plain)  # noqa: S102
    for x in (-10, -1, 0, 1, 95, 200):
        hits = bytearray(len(ranges))
        ns = {REACHED: hits}
        exec(code, ns)  # noqa: S102
        assert ns["f"](x) == ns_plain["f"](x)  # type: ignore[operator]


def test_the_import_hook_serves_the_given_source_once_installed() -> None:
    name = "mmemu_test_hooked_module"
    hook = override_module(name, "VALUE = 42\n", "/nonexistent/hooked.py")
    try:
        import importlib
        mod = importlib.import_module(name)
        assert mod.VALUE == 42 and mod.__file__ == "/nonexistent/hooked.py"
        with pytest.raises(RuntimeError, match="already imported"):
            override_module(name, "VALUE = 0\n", "/x.py")
    finally:
        sys.meta_path.remove(hook)
        sys.modules.pop(name, None)
