"""Protocol mutation operators: small, kernel-shaped edits of Python source.

A mutant is the source of one module with one protocol step broken: a lock
pair dropped, a sequence count not bumped, a retry test that never fires, a
zap moved out of its critical section.  The operators find their targets
with the ``ast`` module and edit the *text* at the nodes' positions, so a
mutant keeps every comment and line of the original but the ones it
changes, and its unified diff is a few lines long.

Which code is mutated: the bodies of functions and methods (not module
level, not ``__init__`` or ``__repr__``-like helpers), minus the code that
runs only when one of mmemu's own named mutants is switched on (the body of
``if mmemu.mutant(X):``, the ``else`` of ``if not mmemu.mutant(X):``, and
functions called only from there): that code is not part of the correct
protocol.  Calls are recognised by the callee's last name
(``mmu_notifier.mmu_notifier_invalidate_range_start(...)`` is
``mmu_notifier_invalidate_range_start``), so the operators work on any
driver that uses the kernel's names.

Every mutant is checked to parse and to differ from the original (an edit
that gives the same syntax tree is dropped); two operators that produce the
same source keep the first.  The order is the order of the source, then of
``OPERATORS``: the same file always gives the same mutants with the same ids.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Iterable, Iterator, Sequence

import attrs

#: operator name -> what it does (``mmemu mutate --operator`` takes the names)
OPERATORS: dict[str, str] = {
    "lock-pair": "drop a lock/unlock pair (spin_lock, mutex, rwsem, lock_page, rcu/srcu, "
                 "mm_take_all_locks)",
    "seq-update": "drop a seq, count or flag update (augmented assignment to a field, "
                  "atomic op, mmu_interval_set_seq, SetPage*/ClearPage*)",
    "store": "drop a store to a shared field (obj.field = value)",
    "retry-test": "drop a retry test (an if whose body retries: continue)",
    "recheck": "drop a recheck (an if whose body bails out: return/break)",
    "signal": "ignore a signal (a signal_pending test never fires)",
    "wait": "drop a wait (a waiting loop, wait_event, a grace period, wait_on_page_*)",
    "move-after-unlock": "move a zap or an update after the unlock of its critical section",
    "wake-up": "drop a wake_up (wake_up*, complete*, wake_all)",
    "notifier": "drop a notifier call (a start/end pair, invalidate_page, release, ...)",
    "zap": "drop a zap or flush (zap, flush, unmap, invalidate, pte_clear)",
    "get-put": "drop a get_page/put_page (or mmget/mmput)",
    "plain-get": "a get-unless-zero becomes a plain get (get_page_unless_zero -> get_page)",
    "wrong-count": "freeze or compare at the wrong count (an int literal +-1)",
    "free-order": "free before the invalidate (move a put/free above the notifier call "
                  "that precedes it)",
}

LOCK_PAIRS: dict[str, str] = {
    "spin_lock": "spin_unlock", "spin_lock_nest_lock": "spin_unlock",
    "spin_lock_irq": "spin_unlock_irq", "spin_lock_irqsave": "spin_unlock_irqrestore",
    "spin_lock_bh": "spin_unlock_bh", "read_lock": "read_unlock", "write_lock": "write_unlock",
    "mutex_lock": "mutex_unlock", "down_read": "up_read", "down_write": "up_write",
    "lock_page": "unlock_page", "rcu_read_lock": "rcu_read_unlock",
    "srcu_read_lock": "srcu_read_unlock", "mm_take_all_locks": "mm_drop_all_locks",
    "i_mmap_lock_write": "i_mmap_unlock_write", "i_mmap_lock_read": "i_mmap_unlock_read",
    "anon_vma_lock_write": "anon_vma_unlock_write", "anon_vma_lock_read": "anon_vma_unlock_read",
    "mmap_read_lock": "mmap_read_unlock", "mmap_write_lock": "mmap_write_unlock",
}
_RELEASES = frozenset(LOCK_PAIRS.values())
_LOCK_OPS = frozenset(LOCK_PAIRS) | _RELEASES | frozenset(
    {"spin_trylock", "mutex_trylock", "down_read_trylock", "down_write_trylock", "trylock_page"})

_ATOMIC_UPDATES = frozenset({
    "atomic_inc", "atomic_dec", "atomic_add", "atomic_sub", "atomic_set", "atomic_inc_return",
    "atomic_dec_return", "atomic_add_return", "atomic_sub_return", "atomic_dec_and_test",
    "atomic_long_inc", "atomic_long_dec", "mmu_interval_set_seq", "write_seqcount_begin",
    "write_seqcount_end", "raw_write_seqcount_begin", "raw_write_seqcount_end",
    "set_bit", "clear_bit", "test_and_set_bit", "test_and_clear_bit", "smp_store_release",
    "WRITE_ONCE",
})
_FLAG_PREFIXES = ("SetPage", "ClearPage", "__SetPage", "__ClearPage")

_WAKES = frozenset({"wake_up", "wake_up_all", "wake_up_interruptible", "wake_up_process",
                    "wake_all", "complete", "complete_all", "wake_up_page", "wake_up_bit",
                    "__wake_up", "wake_up_var"})
_WAITS = frozenset({"synchronize_rcu", "synchronize_srcu", "rcu_barrier", "srcu_barrier",
                    "wait_for_completion", "wait_on_page_locked", "wait_on_page_writeback",
                    "wait_event", "wait_event_interruptible", "wait_event_killable",
                    "wait_var_event", "mmu_notifier_synchronize"})
_BLOCKING = _WAITS | frozenset({"block", "schedule", "io_schedule"})

_NOTIFIER_START = "mmu_notifier_invalidate_range_start"
_NOTIFIER_END = "mmu_notifier_invalidate_range_end"
#: notifier entry points that are not invalidations (registration, helpers)
_NOTIFIER_NOT_CALLS = frozenset({
    "mmu_notifier_register", "__mmu_notifier_register", "mmu_notifier_unregister",
    "mmu_notifier_get", "mmu_notifier_put", "mmu_notifier_range_blockable",
    "mmu_notifier_range_init", "mmu_notifier_srcu", "mmu_notifier_mm_destroy",
    "mmu_notifier_synchronize",
})

_GETS = frozenset({"get_page", "page_cache_get", "mmget", "mmgrab", "get_task_mm"})
_PUTS = frozenset({"put_page", "page_cache_release", "mmput", "mmdrop"})
_PLAIN_GET = {"get_page_unless_zero": "get_page", "page_cache_get_speculative": "get_page",
              "atomic_inc_not_zero": "atomic_inc", "get_page_unless_zero_or_frozen": "get_page"}
_COUNT_CALLS = frozenset({"page_freeze_refs", "page_unfreeze_refs", "atomic_cmpxchg",
                          "page_ref_freeze", "page_ref_unfreeze"})
_COUNT_READS = frozenset({"page_count", "page_mapcount", "atomic_read", "page_ref_count"})
_FREES = frozenset({"put_page", "page_cache_release", "__free_page", "__free_pages",
                    "free_page", "free_pages", "tlb_finish_mmu", "tlb_flush_mmu",
                    "pagevec_release", "release_pages", "free_hot_cold_page"})

_ZAP_RE = re.compile(r"(^|_)(zap|flush|unmap|invalidate|shootdown)(_|$)|^pte_clear$")
#: the notifier callbacks, called through ``mn.ops.<name>(...)``
_CALLBACKS = frozenset({"release", "invalidate_page", "invalidate_range_start",
                        "invalidate_range_end", "clear_flush_young", "test_young", "clear_young",
                        "change_pte", "arch_invalidate_secondary_tlbs", "invalidate"})
_UPDATE_RE = re.compile(r"zap|flush|unmap|invalidate|install|set_seq|set_pte|pte_clear|"
                        r"remove|store|insert|delete|clear|program|update")
_NOTIFYISH_RE = re.compile(r"^mmu_notifier_|_notify$|invalidate|^arch_invalidate")
_SIGNAL_RE = re.compile(r"signal_pending")

#: functions whose statements are not protocol: object set-up and printing
_SKIP_FUNCTIONS = re.compile(r"^(__init__|__repr__|__str__|__hash__|__eq__|__post_init__|"
                             r"_?dump\w*|describe|_describe\w*|__attrs_post_init__)$")


@attrs.frozen
class Mutant:
    """One mutation of one source file.

    ``id`` is stable for a given source: ``<label>:<function>:<operator>:<n>``
    (the n-th mutant of that operator in that function, in source order),
    so an edit elsewhere in the file does not renumber it.  ``touched`` are
    the original lines whose code the mutant changes: a run that executes
    none of them behaves exactly as on the original.
    """

    id: str
    path: str
    line: int
    operator: str
    function: str
    description: str
    touched: tuple[int, ...]
    diff: str
    source: str = attrs.field(repr=False)

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "path": self.path, "line": self.line, "operator": self.operator,
                "function": self.function, "description": self.description,
                "diff": self.diff}


class MutationSourceError(ValueError):
    """The source to mutate does not parse."""


# ------------------------------------------------------------- edits


@attrs.frozen
class _Edit:
    start: int  # character offsets into the original source
    end: int
    text: str


class _Text:
    """The original source with (line, byte column) -> offset conversion
    (ast columns count UTF-8 bytes)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines = source.splitlines(keepends=True)
        self.starts = [0]
        for ln in self.lines:
            self.starts.append(self.starts[-1] + len(ln))

    def offset(self, lineno: int, col: int) -> int:
        line = self.lines[lineno - 1] if lineno - 1 < len(self.lines) else ""
        chars = len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))
        return self.starts[lineno - 1] + chars

    def span(self, node: ast.AST) -> tuple[int, int]:
        return (self.offset(node.lineno, node.col_offset),  # type: ignore[attr-defined]
                self.offset(node.end_lineno, node.end_col_offset))  # type: ignore[attr-defined]

    def segment(self, node: ast.AST) -> str:
        a, b = self.span(node)
        return self.source[a:b]

    def indent(self, node: ast.stmt) -> str:
        line = self.lines[node.lineno - 1]
        return line[:len(line) - len(line.lstrip())]

    def apply(self, edits: Sequence[_Edit]) -> str:
        out = []
        pos = 0
        for e in sorted(edits, key=lambda e: (e.start, e.end)):
            if e.start < pos:
                raise ValueError("overlapping edits")
            out.append(self.source[pos:e.start])
            out.append(e.text)
            pos = e.end
        out.append(self.source[pos:])
        return "".join(out)


def _one_line(text: str, limit: int = 72) -> str:
    s = " ".join(text.split())
    return s if len(s) <= limit else s[:limit - 3] + "..."


# ------------------------------------------------------- call helpers


def _callee(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Await):
        node = node.value
    if not isinstance(node, ast.Call):
        return None
    f = node.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        return f.attr
    return None


def _call(node: ast.AST | None) -> ast.Call | None:
    if isinstance(node, ast.Await):
        node = node.value
    return node if isinstance(node, ast.Call) else None


def _stmt_call(stmt: ast.stmt) -> tuple[str | None, ast.Call | None, bool]:
    """(callee, call, is_assignment) of a statement that is one call, awaited
    or not, as an expression statement or as the value of an assignment."""
    if isinstance(stmt, ast.Expr):
        c = _call(stmt.value)
        return _callee(stmt.value), c, False
    if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
        c = _call(stmt.value)
        if c is not None:
            return _callee(stmt.value), c, True
    return None, None, False


def _calls_in(node: ast.AST) -> Iterator[str]:
    for sub in ast.walk(node):
        name = _callee(sub) if isinstance(sub, ast.Call) else None
        if name:
            yield name


def _is_step(stmt: ast.stmt) -> bool:
    name, _c, assign = _stmt_call(stmt)
    return name == "step" and not assign


def _mentions_mutant(node: ast.AST) -> bool:
    return any(n == "mutant" for n in _calls_in(node))


# ------------------------------------------- code that only mutants run


def _eval_off(test: ast.expr, false_names: frozenset[str]) -> bool | None:
    """The value of ``test`` with every ``mutant(...)`` switched off, if that
    decides it (None: it depends on the run)."""
    if isinstance(test, ast.Call) and _callee(test) == "mutant":
        return False
    if isinstance(test, ast.Name) and test.id in false_names:
        return False
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        v = _eval_off(test.operand, false_names)
        return None if v is None else not v
    if isinstance(test, ast.BoolOp):
        vals = [_eval_off(v, false_names) for v in test.values]
        if isinstance(test.op, ast.And):
            if any(v is False for v in vals):
                return False
            return True if all(v is True for v in vals) else None
        if any(v is True for v in vals):
            return True
        return False if all(v is False for v in vals) else None
    return None


def _mutant_flag_names(fn: ast.AST) -> frozenset[str]:
    """Local names assigned straight from ``mutant(...)`` (``x = mmemu.mutant(M)``)."""
    names = set()
    for sub in ast.walk(fn):
        if isinstance(sub, ast.Assign) and len(sub.targets) == 1 and \
                isinstance(sub.targets[0], ast.Name) and _callee(sub.value) == "mutant":
            names.add(sub.targets[0].id)
    return frozenset(names)


def _dead_regions(tree: ast.Module) -> list[ast.AST]:
    """Statement lists (as the nodes that own them) run only with a mutant on."""
    dead: list[ast.AST] = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        flags = _mutant_flag_names(fn)
        for sub in ast.walk(fn):
            if isinstance(sub, (ast.If, ast.While)):
                v = _eval_off(sub.test, flags)
                if v is False:
                    dead.extend(sub.body)
                elif v is True:
                    dead.extend(sub.orelse)
            elif isinstance(sub, ast.IfExp):
                v = _eval_off(sub.test, flags)
                if v is False:
                    dead.append(sub.body)
                elif v is True:
                    dead.append(sub.orelse)
    return dead


def _setup_names(fn: ast.AST) -> frozenset[str]:
    """Local names that hold the running CPU (``cpu = sim.running``,
    ``sim = _sim_or_none()``): None while a scenario builds its state."""
    names = set()
    for sub in ast.walk(fn):
        if isinstance(sub, ast.Assign) and len(sub.targets) == 1 and \
                isinstance(sub.targets[0], ast.Name):
            v = sub.value
            if isinstance(v, ast.Attribute) and v.attr == "running" or \
                    _callee(v) in ("_sim_or_none", "current_task_or_none"):
                names.add(sub.targets[0].id)
    return frozenset(names)


def _setup_test(test: ast.expr, names: frozenset[str]) -> bool | None:
    """True if ``test`` holds only during set-up (``cpu is None``), False if
    only outside it (``cpu is not None``), None otherwise."""
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and \
            isinstance(test.comparators[0], ast.Constant) and test.comparators[0].value is None:
        left = test.left
        setup = isinstance(left, ast.Name) and left.id in names or \
            isinstance(left, ast.Attribute) and left.attr == "running"
        if setup:
            return True if isinstance(test.ops[0], ast.Is) else \
                False if isinstance(test.ops[0], ast.IsNot) else None
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or):
        if all(_setup_test(v, names) is True for v in test.values):
            return True
    return None


def _setup_regions(tree: ast.Module) -> list[ast.AST]:
    """Statement lists that run only while a scenario builds its initial
    state (no CPU is running): ``if cpu is None: lock.owner = SETUP``."""
    out: list[ast.AST] = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        names = _setup_names(fn)
        for sub in ast.walk(fn):
            if isinstance(sub, ast.If):
                v = _setup_test(sub.test, names)
                if v is True:
                    out.extend(sub.body)
                elif v is False:
                    out.extend(sub.orelse)
    return out


def _dead_nodes(tree: ast.Module) -> set[int]:
    """Ids of every node inside mutant-only code, including functions that
    only mutant-only code calls (repeated to a fixed point)."""
    dead: set[int] = set()
    for region in _dead_regions(tree) + _setup_regions(tree):
        dead.update(id(n) for n in ast.walk(region))
    defs: dict[str, list[ast.AST]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defs.setdefault(node.name, []).append(node)
    changed = True
    while changed:
        changed = False
        live_refs: dict[str, int] = {}
        dead_refs: dict[str, int] = {}
        for node in ast.walk(tree):
            name = node.id if isinstance(node, ast.Name) else \
                node.attr if isinstance(node, ast.Attribute) else None
            if name is None or name not in defs:
                continue
            (dead_refs if id(node) in dead else live_refs)[name] = \
                (dead_refs if id(node) in dead else live_refs).get(name, 0) + 1
        for name, fns in defs.items():
            if dead_refs.get(name) and not live_refs.get(name):
                for fn in fns:
                    if id(fn) not in dead:
                        dead.update(id(n) for n in ast.walk(fn))
                        changed = True
    return dead


# ------------------------------------------------------------ the walk


@attrs.define
class _Candidate:
    operator: str
    line: int
    description: str
    edits: list[_Edit]
    touched: tuple[int, ...]


def _lines(*nodes: ast.AST) -> tuple[int, ...]:
    out: set[int] = set()
    for n in nodes:
        out.update(range(n.lineno, n.end_lineno + 1))  # type: ignore[attr-defined]
    return tuple(sorted(out))


class _FunctionMutator:
    """The candidates of one function body (nested functions are their own)."""

    def __init__(self, text: _Text, fn: ast.FunctionDef | ast.AsyncFunctionDef,
                 dead: set[int], module_names: frozenset[str]) -> None:
        self.text = text
        self.fn = fn
        self.dead = dead
        self.module_names = module_names
        #: protocol code has yield points: the retry, recheck and store
        #: operators look only at async functions
        self.is_async = isinstance(fn, ast.AsyncFunctionDef)
        self.out: list[_Candidate] = []

    # -- edit builders

    def _drop(self, stmt: ast.stmt) -> _Edit:
        """Replace a statement by ``pass`` (or ``x = 0`` for ``x = await f()``,
        so the name stays bound)."""
        a, b = self.text.span(stmt)
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and \
                isinstance(stmt.targets[0], ast.Name):
            return _Edit(a, b, f"{stmt.targets[0].id} = 0")
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            return _Edit(a, b, f"{stmt.target.id} = 0")
        return _Edit(a, b, "pass")

    def _droppable(self, stmt: ast.stmt) -> bool:
        if isinstance(stmt, ast.Expr):
            return True
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            return len(targets) == 1 and isinstance(targets[0], ast.Name)
        return isinstance(stmt, ast.AugAssign)

    def add(self, operator: str, node: ast.AST, description: str, edits: list[_Edit],
            touched: tuple[int, ...]) -> None:
        self.out.append(_Candidate(operator, node.lineno,  # type: ignore[attr-defined]
                                   description, edits, touched))

    def seg(self, node: ast.AST) -> str:
        return _one_line(self.text.segment(node))

    # -- traversal

    def statement_lists(self) -> Iterator[list[ast.stmt]]:
        """Every live statement list of the function, outermost first."""
        todo: list[list[ast.stmt]] = [self.fn.body]
        while todo:
            body = todo.pop(0)
            live = [s for s in body if id(s) not in self.dead]
            if not live:
                continue
            yield live
            for s in live:
                if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    continue
                for field in ("body", "orelse", "finalbody"):
                    sub = getattr(s, field, None)
                    if isinstance(sub, list) and sub and isinstance(sub[0], ast.stmt):
                        todo.append(sub)
                for h in getattr(s, "handlers", []) or []:
                    todo.append(h.body)
                for case in getattr(s, "cases", []) or []:
                    todo.append(case.body)

    def all_statements(self) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for body in self.statement_lists():
            out.extend(body)
        return sorted(out, key=lambda s: (s.lineno, s.col_offset))

    def run(self, operators: frozenset[str]) -> list[_Candidate]:
        stmts = self.all_statements()
        lists = list(self.statement_lists())
        if "lock-pair" in operators:
            self.lock_pairs(stmts)
        if "notifier" in operators:
            self.notifier(stmts)
        for s in stmts:
            self.simple(s, operators)
            if isinstance(s, (ast.If, ast.While)):
                self.tests(s, operators)
            if "wrong-count" in operators:
                self.wrong_count(s)
            if "plain-get" in operators:
                self.plain_get(s)
        for body in lists:
            if "move-after-unlock" in operators:
                self.move_after_unlock(body)
            if "free-order" in operators:
                self.free_order(body)
        return self.out

    # -- operators

    def lock_pairs(self, stmts: list[ast.stmt]) -> None:
        acquires: list[tuple[ast.stmt, str, str]] = []
        releases: list[tuple[ast.stmt, str, str]] = []
        for s in stmts:
            name, call, _assign = _stmt_call(s)
            if call is None or name is None:
                continue
            key = self.seg(call.args[0]) if call.args else ""
            if name in LOCK_PAIRS:
                acquires.append((s, name, key))
            elif name in _RELEASES:
                releases.append((s, name, key))
        for i, (acq, name, key) in enumerate(acquires):
            nxt = next((a.lineno for a, n, k in acquires[i + 1:] if n == name and k == key), None)
            rel = LOCK_PAIRS[name]
            mine = [r for r, n, k in releases if n == rel and k == key and r.lineno > acq.lineno
                    and (nxt is None or r.lineno < nxt)]
            if not mine:
                continue  # the lock is released by another function
            if not self._droppable(acq):
                continue
            edits = [self._drop(acq)] + [self._drop(r) for r in mine]
            self.add("lock-pair", acq, f"drop {name}({key}) and its {rel}", edits,
                     _lines(acq, *mine))

    def notifier(self, stmts: list[ast.stmt]) -> None:
        starts = [s for s in stmts if _stmt_call(s)[0] == _NOTIFIER_START]
        ends = [s for s in stmts if _stmt_call(s)[0] == _NOTIFIER_END]
        for st in starts:
            end = next((e for e in ends if e.lineno > st.lineno), None)
            if end is None:
                continue
            self.add("notifier", st, "drop the mmu_notifier_invalidate_range_start/end pair "
                     f"at lines {st.lineno} and {end.lineno}", [self._drop(st), self._drop(end)],
                     _lines(st, end))
        for s in stmts:
            name, call, _a = _stmt_call(s)
            if name is None or name in (_NOTIFIER_START, _NOTIFIER_END) or \
                    name in _NOTIFIER_NOT_CALLS or not self._droppable(s):
                continue
            via_ops = name in _CALLBACKS and call is not None and \
                isinstance(call.func, ast.Attribute) and \
                isinstance(call.func.value, ast.Attribute) and call.func.value.attr == "ops"
            if name.startswith(("mmu_notifier_", "__mmu_notifier_")) or via_ops or \
                    name == "arch_invalidate_secondary_tlbs":
                self.add("notifier", s, f"drop {self.seg(s)}", [self._drop(s)], _lines(s))

    def simple(self, s: ast.stmt, operators: frozenset[str]) -> None:
        """Operators that drop one statement."""
        name, call, assign = _stmt_call(s)
        if isinstance(s, ast.AugAssign) and isinstance(s.target, (ast.Attribute, ast.Subscript)):
            if "seq-update" in operators:
                self.add("seq-update", s, f"drop {self.seg(s)}", [self._drop(s)], _lines(s))
            return
        if isinstance(s, ast.Assign) and "store" in operators and self.is_async and \
                all(_is_field(t) for t in s.targets) and not _mentions_mutant(s.value):
            a, b = self.text.span(s)
            self.add("store", s, f"drop {self.seg(s)}", [_Edit(a, b, "pass")], _lines(s))
            return
        if name is None or call is None or name == "step":
            return
        if assign and not self._droppable(s):
            return
        if name in _ATOMIC_UPDATES or name.startswith(_FLAG_PREFIXES):
            if "seq-update" in operators and not assign:
                self.add("seq-update", s, f"drop {self.seg(s)}", [self._drop(s)], _lines(s))
        elif name in _WAKES:
            if "wake-up" in operators:
                self.add("wake-up", s, f"drop {self.seg(s)}", [self._drop(s)], _lines(s))
        elif name in _WAITS:
            if "wait" in operators and not assign:
                self.add("wait", s, f"drop {self.seg(s)}", [self._drop(s)], _lines(s))
        elif name in _GETS or name in _PUTS:
            if "get-put" in operators and not assign:
                self.add("get-put", s, f"drop {self.seg(s)}", [self._drop(s)], _lines(s))
        elif name in _LOCK_OPS or name.startswith(("mmu_notifier_", "__mmu_notifier_")) or \
                name in _CALLBACKS and isinstance(call.func, ast.Attribute) and \
                isinstance(call.func.value, ast.Attribute) and call.func.value.attr == "ops":
            return  # the lock-pair and notifier operators own these
        elif _ZAP_RE.search(name):
            if "zap" in operators and not assign:
                self.add("zap", s, f"drop {self.seg(s)}", [self._drop(s)], _lines(s))

    def tests(self, s: ast.If | ast.While, operators: frozenset[str]) -> None:
        test = s.test
        if _eval_off(test, _mutant_flag_names(self.fn)) is not None:
            return  # a mmemu mutant switch, not protocol
        if isinstance(s, ast.While):
            if isinstance(test, ast.Constant):
                return  # while True: a retry loop, not a wait
            waits = any(n in _BLOCKING for st in s.body for n in _calls_in(st))
            if waits and "wait" in operators:
                self._never(s, "wait", f"never wait: `while {self.seg(test)}` runs no iteration")
            return
        if any(_SIGNAL_RE.search(n) for n in _calls_in(test)):
            if "signal" in operators:
                self._never(s, "signal", f"ignore the signal: `if {self.seg(test)}` never fires")
            return
        body = [b for b in s.body if id(b) not in self.dead]
        if not body or not self.is_async:
            return  # tests in plain functions are helpers' logic, not rechecks
        last = body[-1]
        if _null_check(test):
            return  # a guard against a missing object: dropping it only crashes
        if isinstance(last, ast.Continue):
            if "retry-test" in operators:
                self._never(s, "retry-test", f"never retry: `if {self.seg(test)}` never fires")
        elif isinstance(last, (ast.Return, ast.Break)):
            if "recheck" in operators:
                self._never(s, "recheck", f"skip the recheck: `if {self.seg(test)}` never fires")

    def _never(self, s: ast.If | ast.While, operator: str, description: str) -> None:
        """Make the test of ``s`` false; a test with an ``await`` still runs
        (its step and its side effects stay), only its verdict is ignored."""
        a, b = self.text.span(s.test)
        has_await = any(isinstance(n, ast.Await) for n in ast.walk(s.test))
        text = f"({self.text.source[a:b]}) and False" if has_await else "False"
        self.add(operator, s, description, [_Edit(a, b, text)], _lines(s.test))

    def wrong_count(self, s: ast.stmt) -> None:
        # only the statement's own expressions, not its nested statements
        for node in _own_expressions(s):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Call) and _callee(sub) in _COUNT_CALLS:
                    for arg in sub.args:
                        if _is_int(arg):
                            self._bump(s, arg, f"{_callee(sub)} at the wrong count")
                elif isinstance(sub, ast.Compare) and len(sub.comparators) == 1:
                    left, right = sub.left, sub.comparators[0]
                    if _is_int(right) and _is_count(left):
                        self._bump(s, right, f"compare {self.seg(left)} at the wrong count")
                    elif _is_int(left) and _is_count(right):
                        self._bump(s, left, f"compare {self.seg(right)} at the wrong count")

    def _bump(self, s: ast.stmt, lit: ast.expr, what: str) -> None:
        assert isinstance(lit, ast.Constant) and isinstance(lit.value, int)
        a, b = self.text.span(lit)
        for delta in (+1, -1):
            v = lit.value + delta
            if v < 0:
                continue
            self.add("wrong-count", s, f"{what}: {lit.value} -> {v}", [_Edit(a, b, str(v))],
                     _lines(s) if not isinstance(s, (ast.If, ast.While)) else _lines(s.test))

    def plain_get(self, s: ast.stmt) -> None:
        for node in _own_expressions(s):
            for sub in ast.walk(node):
                if not isinstance(sub, ast.Await):
                    continue
                name = _callee(sub)
                call = _call(sub)
                if name not in _PLAIN_GET or call is None or not call.args:
                    continue
                plain = _PLAIN_GET[name]
                if plain not in self.module_names:
                    continue
                a, b = self.text.span(sub)
                args = ", ".join([self.text.segment(call.args[0])] +
                                 [self.text.segment(k) for k in call.keywords])
                self.add("plain-get", s, f"{name} -> {plain} (never fails)",
                         [_Edit(a, b, f"((await {plain}({args})) or True)")], _lines(sub))

    def move_after_unlock(self, body: list[ast.stmt]) -> None:
        for i, acq in enumerate(body):
            name, call, _a = _stmt_call(acq)
            if name not in LOCK_PAIRS or call is None:
                continue
            key = self.seg(call.args[0]) if call.args else ""
            rel_name = LOCK_PAIRS[name]
            j = next((j for j in range(i + 1, len(body))
                      if _stmt_call(body[j])[0] == rel_name and
                      (self.seg(_stmt_call(body[j])[1].args[0])  # type: ignore[union-attr]
                       if _stmt_call(body[j])[1].args else "") == key), None)  # type: ignore[union-attr]
            if j is None:
                continue
            rel = body[j]
            for k in range(i + 1, j):
                s = body[k]
                if not self._protected_update(s):
                    continue
                group = [s]
                if k - 1 > i and _is_step(body[k - 1]):
                    group.insert(0, body[k - 1])
                edits = [_Edit(*self.text.span(g), "pass") for g in group]
                indent = self.text.indent(rel)
                moved = "".join(f"\n{indent}{self.text.segment(g)}" for g in group)
                end = self.text.span(rel)[1]
                edits.append(_Edit(end, end, moved))
                self.add("move-after-unlock", s,
                         f"move {self.seg(s)} after {self.seg(rel)}", edits, _lines(s))

    def _protected_update(self, s: ast.stmt) -> bool:
        if isinstance(s, ast.AugAssign):
            return isinstance(s.target, (ast.Attribute, ast.Subscript))
        if isinstance(s, ast.Assign):
            return all(isinstance(t, (ast.Attribute, ast.Subscript)) for t in s.targets) \
                and not _mentions_mutant(s.value)
        if isinstance(s, ast.For):
            return any(self._protected_update(b) for b in s.body) and not s.orelse
        name, call, assign = _stmt_call(s)
        if name is None or assign or name == "step" or name in _LOCK_OPS:
            return False
        return bool(_UPDATE_RE.search(name)) or name in _ATOMIC_UPDATES

    def free_order(self, body: list[ast.stmt]) -> None:
        last_notify: ast.stmt | None = None
        for s in body:
            name, _call_, assign = _stmt_call(s)
            if name in _FREES and not assign and last_notify is not None:
                a, b = self.text.span(s)
                at = self.text.offset(last_notify.lineno, last_notify.col_offset)
                indent = self.text.indent(last_notify)
                self.add("free-order", s,
                         f"move {self.seg(s)} before {self.seg(last_notify)}",
                         [_Edit(a, b, "pass"),
                          _Edit(at, at, f"{self.text.segment(s)}\n{indent}")], _lines(s))
                continue
            if isinstance(s, (ast.Expr, ast.Assign, ast.AnnAssign)) and any(
                    _NOTIFYISH_RE.search(n) or _ZAP_RE.search(n) for n in _calls_in(s)):
                last_notify = s


def _own_expressions(s: ast.stmt) -> list[ast.AST]:
    """The expressions that belong to ``s`` itself (for an if/while: its
    test; for a simple statement: all of it)."""
    if isinstance(s, (ast.If, ast.While)):
        return [s.test]
    if isinstance(s, (ast.For, ast.AsyncFor)):
        return [s.iter]
    if isinstance(s, (ast.With, ast.AsyncWith)):
        return [i.context_expr for i in s.items]
    if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Try)):
        return []
    return [s]


def _is_field(target: ast.expr) -> bool:
    """``obj.field`` or ``obj.field[i]``, but not the engine's bookkeeping
    (``sim.data[...]``, ``cpu.data[...]``)."""
    if not isinstance(target, (ast.Attribute, ast.Subscript)):
        return False
    node: ast.expr = target
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        if isinstance(node, ast.Attribute) and node.attr == "data" and node is not target:
            return False
        node = node.value
    return True


def _is_int(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int


def _is_count(node: ast.AST) -> bool:
    """``page_count(p)``, ``atomic_read(v)``, ``x._count.counter``, ``x._mapcount.counter``."""
    if isinstance(node, ast.Await):
        node = node.value
    if isinstance(node, ast.Call):
        return _callee(node) in _COUNT_READS
    if isinstance(node, ast.Attribute) and node.attr == "counter":
        return True
    return isinstance(node, ast.Attribute) and node.attr in ("_count", "_mapcount", "_refcount")


def _null_check(test: ast.expr) -> bool:
    """``x is None``, ``not x``, ``x is not None`` on a plain name: a guard
    against a missing object, not a protocol recheck (dropping it only
    crashes on None)."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return isinstance(test.operand, ast.Name)
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and \
            isinstance(test.ops[0], (ast.Is, ast.IsNot)):
        return isinstance(test.left, ast.Name) and \
            isinstance(test.comparators[0], ast.Constant) and test.comparators[0].value is None
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or):
        return _null_check(test.values[0])
    return False


def _module_names(tree: ast.Module) -> frozenset[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                names.add((a.asname or a.name).split(".")[0])
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    names.add(t.id)
    return frozenset(names)


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(qualified name, node) of every function and method, in source order."""
    def walk(body: list[ast.stmt], prefix: str) -> Iterator[tuple[str, ast.FunctionDef |
                                                                    ast.AsyncFunctionDef]]:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                q = prefix + node.name
                yield q, node
                yield from walk(node.body, q + ".")
            elif isinstance(node, ast.ClassDef):
                yield from walk(node.body, prefix + node.name + ".")
            elif isinstance(node, (ast.If, ast.Try)):
                yield from walk(node.body, prefix)
                yield from walk(getattr(node, "orelse", []), prefix)
    yield from walk(tree.body, "")


def generate_mutants(source: str, path: str, *, label: str | None = None,
                     operators: Iterable[str] | None = None,
                     exclude: Iterable[str] = ()) -> list[Mutant]:
    """Every mutant of ``source`` (the text of the file at ``path``).

    ``label`` prefixes the ids (default: the file's stem); ``operators``
    restricts the operators (names from ``OPERATORS``; unknown names are a
    ValueError); ``exclude`` are regular expressions over qualified function
    names (``LockdepGraph\\..*``) whose bodies are left alone.  Raises
    MutationSourceError if ``source`` does not parse.
    """
    skip = [re.compile(p) for p in exclude]
    ops = frozenset(OPERATORS if operators is None else operators)
    unknown = sorted(ops - set(OPERATORS))
    if unknown:
        raise ValueError(f"unknown mutation operator {unknown[0]!r} "
                         f"(known: {', '.join(OPERATORS)})")
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        raise MutationSourceError(f"cannot parse {path}: {exc.msg} (line {exc.lineno})") from None
    if label is None:
        label = path.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".py")
    text = _Text(source)
    posix = path.replace("\\", "/")
    old_name, new_name = (posix, f"{posix} (mutant)") if posix.startswith("/") else \
        (f"a/{posix}", f"b/{posix}")
    dead = _dead_nodes(tree)
    names = _module_names(tree)
    original_dump = ast.dump(tree)
    seen_sources: set[str] = set()
    out: list[Mutant] = []
    for qual, fn in _functions(tree):
        if id(fn) in dead or _SKIP_FUNCTIONS.match(fn.name) or \
                any(p.fullmatch(qual) for p in skip):
            continue
        counters: dict[str, int] = {}
        cands = _FunctionMutator(text, fn, dead, names).run(ops)
        cands.sort(key=lambda c: (c.line, list(OPERATORS).index(c.operator)))
        for c in cands:
            counters[c.operator] = counters.get(c.operator, 0) + 1
            mid = f"{label}:{qual}:{c.operator}:{counters[c.operator]}"
            try:
                mutated = text.apply(c.edits)
                mtree = ast.parse(mutated)
            except (SyntaxError, ValueError):
                continue
            if ast.dump(mtree) == original_dump or mutated in seen_sources:
                continue
            seen_sources.add(mutated)
            diff = "".join(difflib.unified_diff(
                source.splitlines(keepends=True), mutated.splitlines(keepends=True),
                fromfile=old_name, tofile=new_name, n=2))
            out.append(Mutant(id=mid, path=path, line=c.line, operator=c.operator,
                              function=qual, description=c.description, touched=c.touched,
                              diff=diff, source=mutated))
    return out


__all__ = ["LOCK_PAIRS", "OPERATORS", "Mutant", "MutationSourceError", "generate_mutants"]
