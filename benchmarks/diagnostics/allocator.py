"""Client training with glibc's dynamic mmap threshold vs the pinned one, in one run.

Usage (the figures in docs/results.md, "Client memory"):
    python benchmarks/diagnostics/allocator.py --steps 6 --repeats 2 --out runs/allocator.json

For the full LLM and the default-size proxy (as in benchmarks/perf.py), each client runs in its
own fresh process, once with glibc's default allocator behaviour (what fedproxy uses) and once
with the mmap threshold pinned (``perf.pin_mmap_threshold``), alternating ``--repeats`` times
so drift on a shared machine hits both settings alike. Prints the median tokens/s and peak RSS
of each, and the pinned / default ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # perf.py, the headline performance benchmark

from perf import median_figures, prepare_models, run_isolated  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6, help="measured client steps per process (after one warm-up)")
    p.add_argument("--repeats", type=int, default=2, help="processes per model and setting")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="also write the raw measurements here as JSON")
    args = p.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        p.error("--steps and --repeats must be at least 1")
    runs: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = prepare_models(Path(tmp), args.seed)
        for kind in ("full-llm", "proxy"):
            model_dir, only = models[kind]
            for _ in range(args.repeats):
                for pinned in (False, True):
                    r = run_isolated(kind, model_dir, only, args.steps, args.seed, args.batch, pin_malloc=pinned)
                    runs.setdefault(kind, {}).setdefault("pinned" if pinned else "default", []).append(r)
    print(f"client training, batch {args.batch}, {args.steps} steps, median of {args.repeats} processes each")
    print("| model | malloc mmap threshold | tokens/s | peak RSS MB | RSS above runtime MB |")
    print("|---|---|---|---|---|")
    summary = {}
    for kind, by in runs.items():
        med = {s: median_figures(rs) for s, rs in by.items()}
        for s, m in med.items():
            print(f"| {kind} | {s} | {m['tokens_per_s']:.0f} | {m['peak_rss_mb']:.0f} | "
                  f"{m['peak_rss_mb'] - m['runtime_rss_mb']:.0f} |")
        summary[kind] = {"tokens_per_s_ratio": med["pinned"]["tokens_per_s"] / med["default"]["tokens_per_s"],
                         "peak_rss_ratio": med["pinned"]["peak_rss_mb"] / med["default"]["peak_rss_mb"]}
    for kind, r in summary.items():
        print(f"{kind}: pinned / default tokens/s {r['tokens_per_s_ratio']:.2f}, peak RSS {r['peak_rss_ratio']:.2f}")
    pinned_ok = all(r.get("mmap_threshold_pinned") for by in runs.values() for r in by.get("pinned", []))
    if not pinned_ok:
        print("note: pinning did not take effect here (not glibc), so both settings are the same")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs,
                                        "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
