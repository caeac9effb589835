"""The main job's fingerprint: per run, the executions, blocked executions,
traces, a hash of every execution's schedule in exploration order, and the
CPU time.  Two trees that print the same fingerprints explored the same
executions in the same order: use it to show an engine change altered cost
only, not behaviour (diff the outputs without the cpu column).

Run:  python benchmarks/fingerprint.py [--family AREA ...] [--top N] > before.txt

A script, not a test: it prints and asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from typing import Any

import mmemu
from mmemu.engine import all_scenarios
from mmemu.engine._strategies import make_strategy


def fingerprint(name: str, strategy: Any, executions: int,
                params: dict[str, Any]) -> tuple[mmemu.Result, str, str, float]:
    """Explore like ``mmemu run`` and hash every execution's choices (the
    abandoned ones too) in the order the strategy ran them."""
    digest = hashlib.sha256()
    first: list[str] = []
    inner_end = strategy.end

    def end(sim: Any) -> None:
        digest.update(repr((tuple(sim.choices), bool(sim.abandoned))).encode())
        if not first:
            first.append(",".join(map(str, sim.choices)))
        inner_end(sim)

    strategy.end = end
    cpu = time.process_time()
    res = mmemu.explore(name, strategy=strategy, executions=executions, params=params)
    return res, digest.hexdigest()[:16], (first[0] if first else ""), time.process_time() - cpu


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", nargs="*", help="only these families (cow, ksm, notifier, ...)")
    ap.add_argument("--top", type=int, default=0, help="also list the N costliest runs")
    args = ap.parse_args(argv)
    rows = []
    total = time.process_time()
    for sc in all_scenarios():
        if sc.expect != "pass":
            continue
        if args.family and sc.name.split(":")[0] not in args.family:
            continue
        for params in sc.combinations():
            strategy = make_strategy(sc.strategy, max_preemptions=sc.max_preemptions)
            res, digest, first, cpu = fingerprint(sc.name, strategy, sc.executions, params)
            kind = res.failure.kind if res.failure else "ok"
            label = f"{sc.name} {json.dumps(params, sort_keys=True)}"
            rows.append((label, cpu))
            print(f"{label} executions={res.executions} blocked={res.blocked} "
                  f"traces={res.traces} exhausted={res.exhausted} {kind} "
                  f"choices={digest} first={first[:40]} cpu={cpu:.2f}", flush=True)
    print(f"total cpu={time.process_time() - total:.2f} runs={len(rows)}")
    if args.top:
        for label, cpu in sorted(rows, key=lambda r: -r[1])[:args.top]:
            print(f"  top {cpu:7.2f} {label}")


if __name__ == "__main__":
    main()
