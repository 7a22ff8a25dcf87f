"""Client training speed and peak memory of an earlier commit's library against the working tree's.

Usage (the before/after figures in docs/results.md, "Client memory"):
    python benchmarks/diagnostics/compare_commits.py 1f3ab4a --repeats 2 --out runs/compare_commits.json

Checks the commit out into a temporary git worktree and times the same client configurations
(benchmarks/perf.py's full LLM and default-size proxy) with each library in turn: every
measurement is a fresh process whose ``fedproxy`` is imported from that commit's ``src`` or from
this tree's, alternating, so drift on a shared machine hits both alike. The measuring code
(perf.py) is this tree's for both. Prints the median tokens/s and peak RSS of each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))  # perf.py, the headline performance benchmark

from perf import median_figures, prepare_models  # noqa: E402
_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from perf import run_isolated
print("RESULT " + json.dumps(run_isolated(sys.argv[2], sys.argv[3], None, int(sys.argv[4]), 0, int(sys.argv[5]))))
"""


def measure(src: Path, kind: str, model_dir: str, steps: int, batch: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))  # ahead of the installed fedproxy
    out = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT / "benchmarks"), kind, model_dir, str(steps),
                          str(batch)], env=env, capture_output=True, text=True)
    if out.returncode != 0 or "RESULT " not in out.stdout:
        raise SystemExit(f"measuring {kind} with {src} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.split("RESULT ", 1)[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("commit", help="the earlier commit (any git revision)")
    p.add_argument("--repeats", type=int, default=2, help="processes per library and model")
    p.add_argument("--steps", type=int, default=6, help="measured client steps per process (after one warm-up)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--out", type=Path, help="also write every measurement here as JSON")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.steps < 1:
        p.error("--repeats and --steps must be at least 1")
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{args.commit}^{{commit}}"],
                         capture_output=True, text=True)
    if rev.returncode != 0:
        p.error(f"{args.commit!r} is not a commit of this repository")
    commit = rev.stdout.strip()
    runs: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old), commit], check=True)
        try:
            models = prepare_models(Path(tmp) / "models", 0)
            for _ in range(args.repeats):
                for kind in ("full-llm", "proxy"):
                    for label, src in ((commit[:7], old / "src"), ("this tree", ROOT / "src")):
                        r = measure(src, kind, models[kind][0], args.steps, args.batch)
                        runs.setdefault(kind, {}).setdefault(label, []).append(r)
                        print(f"{kind} with {label}: {r['tokens_per_s']:.0f} tokens/s, "
                              f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)
    print(f"\nclient training, batch {args.batch}, {args.steps} steps, median of {args.repeats} processes each")
    print("| model | library | tokens/s | peak RSS MB | RSS above runtime MB |")
    print("|---|---|---|---|---|")
    for kind, by in runs.items():
        for label, rs in by.items():
            med = median_figures(rs)
            print(f"| {kind} | {label} | {med['tokens_per_s']:.0f} | {med['peak_rss_mb']:.0f} | "
                  f"{med['peak_rss_mb'] - med['runtime_rss_mb']:.0f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"commit": commit, "args": {k: str(v) for k, v in vars(args).items()},
                                        "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
