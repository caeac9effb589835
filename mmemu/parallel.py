"""Parallel exploration: processes (``jobs``), shards and Dask clusters.

``explore_parallel`` takes ``explore``'s options plus ``jobs``, ``shard``
and ``dask``; ``merge_results`` merges the ``--json`` rows of shards.  The
design (how executions are cut into units, why the reported failure does not
depend on the number of workers) is in ``mmemu/engine/_parallel.py``.
"""

from mmemu.engine._parallel import explore_parallel, merge_results, parse_shard, run_unit

__all__ = ["explore_parallel", "merge_results", "parse_shard", "run_unit"]
