"""Do two runs give the same results? Compares two report.json files, timings and paths aside.

Usage (issue #23's check that a refactor changed no behaviour):
    python benchmarks/diagnostics/report_diff.py runs/before/report.json runs/after/report.json

Every leaf is compared exactly (scores, per-example predictions, losses, fusion choices,
federation records), except wall times, peak memory, the environment and file paths, which
differ between any two runs. Keys that only one report has (a later version's additions) are listed apart.
Exits 1 when a shared leaf differs.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

# Leaves that differ between two runs of the same code: times, peak memory (it depends on what the
# process did before), paths, the machine.
IGNORED = re.compile(r"seconds|wall|_s$|rss|^environment$|^command$|dir$|path$|^shared_from$|^run_log$")


def leaves(node, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        return {k: v for key, child in node.items() if not IGNORED.search(str(key))
                for k, v in leaves(child, f"{prefix}/{key}").items()}
    if isinstance(node, list):
        return {k: v for i, child in enumerate(node) for k, v in leaves(child, f"{prefix}[{i}]").items()}
    return {prefix: node}


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        raise SystemExit(__doc__)
    a, b = (leaves(json.loads(Path(p).read_text())) for p in args)
    shared = sorted(a.keys() & b.keys())
    differ = [k for k in shared if a[k] != b[k]]
    for k in differ[:50]:
        print(f"differs {k}: {a[k]!r} -> {b[k]!r}")
    for name, only in (("first", a.keys() - b.keys()), ("second", b.keys() - a.keys())):
        for k in sorted({re.sub(r"\[\d+\].*", "[...]", k) for k in only})[:30]:
            print(f"only in the {name}: {k}")
    print(f"{len(shared)} shared leaves, {len(differ)} differ; {len(a.keys() ^ b.keys())} in one report only")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
