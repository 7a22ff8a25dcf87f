"""Benchmarks: client partitions, test sets, server-side validation and calibration text.

The built-in benchmarks register themselves in :data:`BENCHMARKS` on import; this package
imports them, and they import only :mod:`.benchmark`, so the registry and its entries never
import each other.
"""

from __future__ import annotations

import random

from .. import assets
from ..config import DataConfig
from . import multiemo, qa_domains, synthetic  # noqa: F401  (registration)
from .benchmark import BENCHMARKS, Benchmark, Example
from .local import load_client, load_local

__all__ = ["BENCHMARKS", "Benchmark", "Example", "load_benchmark", "load_client"]


def load_benchmark(cfg: DataConfig, seed: int, cache=None, server_text: bool = True,
                   server_only: bool = False) -> Benchmark:
    """The benchmark ``cfg.benchmark`` split with ``seed``.

    ``server_text=False`` leaves the server's unlabelled text out (empty list): a client never
    uses it, and reading and cutting it was 0.3 s of every Flower client message on multiemo.
    Everything else is the same as with it. ``server_only``: of your own folder (``data.dir``),
    only what the server owns (:func:`load_local`), as a Flower ServerApp reads it.
    """
    if not cfg.dir:
        return BENCHMARKS.get(cfg.benchmark)(cfg, seed, cache, server_text=server_text)
    bench = load_local(cfg.dir, seed, server_only=server_only)
    if server_text and not bench.server_text:  # no public text of the user's: the built-in passages
        tasks = assets.bigbench_tasks(list(multiemo.SERVER_TEXT_TASKS), cache)
        bench.server_text = multiemo.public_text(tasks, cfg.server_text, random.Random(seed))
    if not server_text:
        bench.server_text = []
    return bench
