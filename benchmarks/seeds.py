"""Run `fedproxy run` for several seeds and print mean ± std per method.

Usage (the table in docs/results.md):
    python benchmarks/seeds.py --seeds 0 1 2 --out runs/seeds -- --set fed.rounds=3

With `--summary-only` nothing runs: the reports already in <out>/seed<N> are summarized.
Everything after `--` is passed to `fedproxy run`. Each seed writes runs/seeds/seed<N>/report.json
(resumable with --resume); the summary goes to runs/seeds/summary.json and stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from fedproxy.cli import main as fedproxy_main


def summarize(reports: list[dict]) -> dict:
    methods = reports[0]["methods"]
    out = {}
    for name in methods:
        accs = [r["methods"][name]["accuracy"] for r in reports]
        gains = [r["methods"][name].get("gain_recovered") for r in reports]
        gains = [g for g in gains if g is not None]
        out[name] = {"accuracy_mean": statistics.mean(accs), "accuracy_std": statistics.pstdev(accs),
                     "gain_recovered_mean": statistics.mean(gains) if gains else None, "accuracies": accs}
        proxy = [r["methods"][name].get("proxy_after_fl", {}).get("accuracy") for r in reports]
        if all(p is not None for p in proxy):
            out[name]["proxy_alone_mean"] = statistics.mean(proxy)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/seeds")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--summary-only", action="store_true",
                   help="run nothing: summarize the report.json already in <out>/seed<N> (e.g. links to runs made "
                        "with `fedproxy run --set seed=N`)")
    args = p.parse_args(own)
    reports = []
    for seed in args.seeds:
        out = Path(args.out) / f"seed{seed}"
        cmd = ["run", "--out", str(out), "--set", f"seed={seed}", "--quiet", *extra] + (["--resume"] if args.resume else [])
        if args.summary_only:
            if not (out / "report.json").is_file():
                print(f"no report for seed {seed}: {out / 'report.json'} is missing; run without --summary-only")
                return 1
        elif fedproxy_main(cmd) != 0:
            return 1
        reports.append(json.loads((out / "report.json").read_text()))
    summary = {"seeds": args.seeds, "command": " ".join(["python benchmarks/seeds.py", *argv]),
               "methods": summarize(reports)}
    Path(args.out, "summary.json").write_text(json.dumps(summary, indent=2))
    print("| method | accuracy (mean ± std) | gain recovered | proxy alone |")
    print("|---|---|---|---|")
    for name, m in summary["methods"].items():
        g = m["gain_recovered_mean"]
        pa = m.get("proxy_alone_mean")
        print(f"| {name} | {m['accuracy_mean']:.3f} ± {m['accuracy_std']:.3f} | "
              f"{'-' if g is None else f'{100 * g:.0f}%'} | {'-' if pa is None else f'{pa:.3f}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
