"""Run `fedproxy run` for several seeds and print mean ± std per method.

Usage (the table in docs/results.md):
    python benchmarks/seeds.py --seeds 0 1 2 --out runs/seeds -- --set fed.rounds=3

With `--summary-only` nothing runs: the reports already in <out>/seed<N> are summarized.
`--merge 'runs/pc_s{seed}'` adds the methods of other runs of the same seeds (e.g. a diagnostic
method run on each seed's proxy) to the summary, with their gain over that seed's zero-shot
and centralized rows.
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


def merge(report: dict, other: dict) -> dict:
    """``report`` with ``other``'s methods added; their gain recovered is computed against
    ``report``'s zero-shot and centralized accuracies (``other`` must be the same seed)."""
    if other["config"]["seed"] != report["config"]["seed"]:
        raise SystemExit(f"--merge: a report of seed {other['config']['seed']} was given for seed "
                         f"{report['config']['seed']}; put {{seed}} in the pattern")
    methods = dict(report["methods"])
    zs, cent = (report["methods"].get(k, {}).get("accuracy") for k in ("zero-shot", "centralized"))
    for name, m in other["methods"].items():
        if name in methods:
            continue  # the seed's own run of a method wins
        gain = (m["accuracy"] - zs) / (cent - zs) if zs is not None and cent is not None and cent != zs else None
        methods[name] = {**m, "gain_recovered": gain}
    return {**report, "methods": methods}


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
    p.add_argument("--merge", nargs="*", default=[], metavar="PATTERN",
                   help="run folders whose methods join the summary, with {seed} for the seed, e.g. 'runs/pc_s{seed}'")
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
        report = json.loads((out / "report.json").read_text())
        for pattern in args.merge:
            other = Path(pattern.format(seed=seed)) / "report.json"
            if not other.is_file():
                print(f"--merge: {other} is missing for seed {seed}")
                return 1
            report = merge(report, json.loads(other.read_text()))
        reports.append(report)
    summary = {"seeds": args.seeds, "command": " ".join(["python benchmarks/seeds.py", *argv]),
               "methods": summarize(reports)}
    Path(args.out, "summary.json").write_text(json.dumps(summary, indent=2))
    print("| method | accuracy (mean ± std) | per seed | gain recovered | proxy alone |")
    print("|---|---|---|---|---|")
    for name, m in summary["methods"].items():
        g = m["gain_recovered_mean"]
        pa = m.get("proxy_alone_mean")
        print(f"| {name} | {m['accuracy_mean']:.3f} ± {m['accuracy_std']:.3f} | "
              f"{', '.join(f'{a:.3f}' for a in m['accuracies'])} | "
              f"{'-' if g is None else f'{100 * g:.0f}%'} | {'-' if pa is None else f'{pa:.3f}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
