"""Run `fedproxy run` for several seeds; summarize with paired 95% bootstrap CIs and harm counts.

Usage (the committed summaries in benchmarks/results/):
    python benchmarks/seeds.py --seeds 0 1 2 --out runs/seeds --resume \
        --results benchmarks/results/multiemo-domains.json -- --set 'methods=[...]'

Every comparison is a paired difference over seeds x test examples (the same examples for
every method of a seed), with a 95% bootstrap CI (fedproxy.eval.stats); so is the share of the
centralized gain. "harm" counts the shipped fused models (fedproxy, offsite-tuning,
proxy-centralized) below zero-shot by more than one standard error, and those whose test
predictions fail the collapse guard (fedproxy.eval.guard).

With `--summary-only` nothing runs: the reports already in <out>/seed<N> are summarized;
`--records DIR` summarizes the committed seed records DIR/seed<N>.json.gz instead (benchmarks/records.py:
a seed whose methods ran in several sessions or on several machines).
`--merge 'runs/pc_s{seed}'` adds the methods of other runs of the same seeds (e.g. a diagnostic
method run on each seed's proxy) to the summary, with their gain over that seed's zero-shot
and centralized rows.
Everything after `--` is passed to `fedproxy run`. Each seed writes runs/seeds/seed<N>/report.json
(resumable with --resume); the summary goes to runs/seeds/summary.json and stdout. The summary
also holds the learning curves over the seeds (fedproxy.report.learning_curves: each round's mean
and every seed's series, and every method's score on the curve's test subset); `--figure` plots them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from fedproxy.cli import main as fedproxy_main
from fedproxy.errors import FedProxyError
from fedproxy.eval import headline
from fedproxy.eval.stats import gain_ci, paired_ci
from fedproxy.fuse import UNCHANGED_LLM, tie_break
from fedproxy.report import example_scores, learning_curves, plot_curves, shipped_harm
from records import as_report, read  # benchmarks/records.py, beside this script


# Methods whose shipped model is chosen on server validation (the do-no-harm rule applies).
SELECTING = ("fedproxy", "offsite-tuning", "offsite-tuning-raw", "proxy-centralized")


def summarize(reports: list[dict]) -> dict:
    """Per-method means and per-seed scores, paired differences and the gain share with 95% bootstrap
    CIs over seeds x test examples, and the harm counts (``benchmarks/results/<benchmark>.json``)."""
    clients = [c["name"] for c in reports[0]["benchmark"]["clients"]]
    names = list(reports[0]["methods"])
    scores = {n: [example_scores(r["methods"][n], clients, required=True) for r in reports] for n in names}
    if all("proxy_after_fl" in r["methods"].get("fedproxy", {}) for r in reports):
        scores["proxy-alone"] = [example_scores(r["methods"]["fedproxy"]["proxy_after_fl"], clients, required=True)
                                 for r in reports]
    methods = {}
    for n in names:
        rows = [r["methods"][n] for r in reports]
        per_seed = [float(x.mean()) for x in scores[n]]
        fed = [row.get("federation", {}) for row in rows]
        methods[n] = {"score": {"mean": statistics.mean(per_seed), "std": statistics.pstdev(per_seed),
                                "per_seed": per_seed},
                      "examples_seen": statistics.mean(row.get("examples_seen", f.get("examples_seen", 0))
                                                       for row, f in zip(rows, fed)),
                      "rounds": statistics.mean(f.get("rounds", 0) for f in fed),
                      "wall_s": statistics.mean(row.get("wall_seconds", 0.0) for row in rows),
                      # per seed, as seeds may run on different machines (see the summary's "machines")
                      "wall_s_per_seed": [row.get("wall_seconds", 0.0) for row in rows]}
        if any("fusion" in row for row in rows):
            methods[n]["shipped"] = [row.get("fusion", {}).get("decision", {}).get("shipped") for row in rows]
            methods[n]["flagged_rounds"] = [f.get("flagged_rounds", []) for f in fed]
        if "proxy_after_fl" in rows[0]:
            methods[n]["proxy_alone"] = statistics.mean(headline(row["proxy_after_fl"]) for row in rows)
    if "fedproxy" in methods:
        methods["fedproxy"]["aggregator"] = reports[0]["config"]["fed"]["aggregator"]
    for n in (m for m in ("offsite-tuning", "offsite-tuning-raw") if m in methods):
        methods[n]["emulator_distilled"] = all(r["methods"][n].get("emulator_distilled", False) for r in reports)
    out = {"methods": methods, "paired": {}, "gain_recovered": {}}
    pairs = [("fedproxy", "offsite-tuning"), ("fedproxy", "proxy-alone"), ("fedproxy", "zero-shot"),
             ("centralized", "fedproxy"), ("proxy-centralized", "fedproxy"), ("centralized-kept", "proxy-centralized")]
    for a, b in pairs:
        if a in scores and b in scores:
            out["paired"][f"{a} - {b}"] = paired_ci(scores[a], scores[b])
    if all(k in scores for k in ("fedproxy", "zero-shot", "centralized")):
        out["gain_recovered"] = {"method": "fedproxy", **gain_ci(scores["fedproxy"], scores["zero-shot"],
                                                                 scores["centralized"])}
        out["gain_recovered_by_method"] = {
            n: gain_ci(scores[n], scores["zero-shot"], scores["centralized"])
            for n in names if n not in ("zero-shot", "centralized")}
        out["transfer"] = _transfer(reports, clients, scores)
    harm = {"seeds_below_zero_shot": 0, "collapsed_shipped": 0, "by_method": {}}
    if "zero-shot" in scores:
        for n in (m for m in SELECTING if m in scores):
            harms = [shipped_harm(r["methods"][n], r["methods"]["zero-shot"], clients) for r in reports]
            below = [i for i, h in enumerate(harms) if h["below_zero_shot"]]
            collapsed = [i for i, h in enumerate(harms) if h["collapsed"]]
            harm["by_method"][n] = {"seeds_below_zero_shot": [reports[i]["seed"] for i in below],
                                    "collapsed_shipped": [reports[i]["seed"] for i in collapsed]}
            harm["seeds_below_zero_shot"] += len(below)
            harm["collapsed_shipped"] += len(collapsed)
    # What the do-no-harm rule costs: the seeds where the best validation score alone (no paired
    # test, no collapse guard) would have shipped another candidate. Where it picks the same one,
    # the rule cost that seed nothing.
    harm["rule_changed_choice"] = {n: _rule_changed(reports, n) for n in SELECTING if n in names}
    out["harm"] = harm
    return out


def _transfer(reports: list[dict], clients: list[str], scores: dict) -> dict:
    """Where a plugged-in method's share of the centralized gain goes, per method whose client model
    was scored before and after training: ``client_gain`` is the client model's own gain (after minus
    before) as a share of the centralized gain, ``carried_over`` the fused LLM's gain over zero-shot
    as a share of that own gain; their product is the method's gain share. Both with 95% bootstrap
    CIs over seeds x test examples."""
    z, c = scores["zero-shot"], scores["centralized"]
    out = {}
    for n in ("fedproxy", "proxy-centralized", "offsite-tuning"):
        rows = [r["methods"].get(n, {}) for r in reports]
        if n not in scores or not all("proxy_before_fl" in row and "proxy_after_fl" in row for row in rows):
            continue
        # zero-shot plus the client model's own gain, per example: a "method" whose gain is that own gain
        own = [zi + example_scores(row["proxy_after_fl"], clients, required=True)
               - example_scores(row["proxy_before_fl"], clients, required=True) for zi, row in zip(z, rows)]
        out[n] = {"client_gain": gain_ci(own, z, c), "carried_over": gain_ci(scores[n], z, own)}
    return out


def _rule_changed(reports: list[dict], name: str) -> list[dict]:
    """The seeds where ``name`` shipped another candidate than the best validation score alone picks."""
    changed = []
    for r in reports:
        fusion = r["methods"][name].get("fusion", {})
        if not fusion.get("trials"):
            continue
        best = max(fusion["trials"], key=lambda t: (t["val_accuracy"], *tie_break(t)))
        if _plugin_name(best) != _plugin_name(fusion):
            changed.append({"seed": r["seed"], "shipped": _plugin_name(fusion), "best_validation": _plugin_name(best)})
    return changed


def _plugin_name(trial: dict) -> str:
    """'unchanged LLM', or e.g. 'x2 source' / 'x1 source aligned'."""
    if trial["scale"] == 0:
        return UNCHANGED_LLM
    return f"x{trial['scale']:g} {trial['variant']}" + (" aligned" if trial.get("aligned") else "")


def merge(report: dict, other: dict) -> dict:
    """``report`` with ``other``'s methods added; their gain recovered is computed against
    ``report``'s zero-shot and centralized accuracies (``other`` must be the same seed)."""
    if other["config"]["seed"] != report["config"]["seed"]:
        raise SystemExit(f"--merge: a report of seed {other['config']['seed']} was given for seed "
                         f"{report['config']['seed']}; put {{seed}} in the pattern")
    methods = dict(report["methods"])
    zs, cent = (headline(report["methods"][k]) if k in report["methods"] else None
                for k in ("zero-shot", "centralized"))
    for name, m in other["methods"].items():
        if name in methods:
            continue  # the seed's own run of a method wins
        gain = (headline(m) - zs) / (cent - zs) if zs is not None and cent is not None and cent != zs else None
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
    p.add_argument("--results", default="", metavar="FILE",
                   help="also write the summary here, e.g. benchmarks/results/multiemo-domains.json (committed)")
    p.add_argument("--name", default="", help="the benchmark's name in the summary (default: the report's)")
    p.add_argument("--merge", nargs="*", default=[], metavar="PATTERN",
                   help="run folders whose methods join the summary, with {seed} for the seed, e.g. 'runs/pc_s{seed}'")
    p.add_argument("--records", default="", metavar="DIR",
                   help="run nothing: summarize the seed records DIR/seed<N>.json.gz (benchmarks/records.py)")
    p.add_argument("--figure", default="", metavar="PNG",
                   help="also plot the learning curves over the seeds here (e.g. docs/figures/<benchmark>-curves.png)")
    args = p.parse_args(own)
    reports = []
    for seed in args.seeds:
        out = Path(args.out) / f"seed{seed}"
        cmd = ["run", "--out", str(out), "--set", f"seed={seed}", "--quiet", *extra] + (["--resume"] if args.resume else [])
        if args.records:
            path = Path(args.records) / f"seed{seed}.json.gz"
            if not path.is_file():
                print(f"no record for seed {seed}: {path} is missing (benchmarks/records.py save)")
                return 1
            reports.append(as_report(read(path)))
            continue
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
    first = reports[0]
    missing = {r["seed"]: sorted(set(first["methods"]) - set(r["methods"])) for r in reports}
    if any(missing.values()):  # every comparison is paired within a seed: no method may lack one
        print("methods missing: " + "; ".join(f"seed {k}: {', '.join(v)}" for k, v in missing.items() if v))
        return 1
    summary = {"benchmark": args.name or first["benchmark"]["name"],
               "metric": first["benchmark"].get("metric", "accuracy"),
               "command": " ".join(["python benchmarks/seeds.py", *argv]), "seeds": args.seeds,
               "test_examples": sum(c["test"] for c in first["benchmark"]["clients"]),
               "config": {k: first["config"][k] for k in ("model", "data", "fed", "fuse")},
               "machines": {str(r["seed"]): machines(r) for r in reports},
               **summarize(reports), "curves": learning_curves(reports)}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "summary.json").write_text(json.dumps(summary, indent=2))
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(json.dumps(summary, indent=2) + "\n")
    if args.figure:
        plot_curves(summary["curves"], Path(args.figure), summary["metric"])
    print(format_summary(summary))
    return 0


def machines(report: dict) -> dict:
    """Where a seed ran: its report's machine, and each method's where that differs (a seed record's
    methods may come from several sessions or machines)."""
    keys = ("device", "processor", "threads", "torch")
    env = {k: report.get("environment", {}).get(k) for k in keys}
    other = {n: {k: m["environment"].get(k) for k in keys} for n, m in report["methods"].items()
             if "environment" in m and {k: m["environment"].get(k) for k in keys} != env}
    return {**env, **({"methods": other} if other else {})}


def format_summary(summary: dict) -> str:
    """The summary as Markdown: one row per method, then the paired differences and the harm counts."""
    lines = ["| method | score (mean ± std) | per seed | gain recovered [95% CI] | proxy alone | shipped |",
             "|---|---|---|---|---|---|"]
    gains = summary.get("gain_recovered_by_method", {})
    for name, m in summary["methods"].items():
        s, g = m["score"], gains.get(name)
        gain = "-" if g is None else f"{100 * g['mean']:.0f}% [{100 * g['ci95'][0]:.0f}, {100 * g['ci95'][1]:.0f}]"
        pa = m.get("proxy_alone")
        lines.append(f"| {name} | {s['mean']:.3f} ± {s['std']:.3f} | {', '.join(f'{a:.3f}' for a in s['per_seed'])} "
                     f"| {gain} | {'-' if pa is None else f'{pa:.3f}'} "
                     f"| {', '.join(map(str, m.get('shipped', []))) or '-'} |")
    lines += ["", "| paired difference | mean | 95% CI |", "|---|---|---|"]
    lines += [f"| {k} | {v['mean']:+.3f} | [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}] |"
              for k, v in summary["paired"].items()]
    for n, t in summary.get("transfer", {}).items():
        own, carried = t["client_gain"], t["carried_over"]
        lines.append(f"| {n}: the client model's own gain / share of it the fused LLM carries | "
                     f"{100 * own['mean']:.0f}% / {100 * carried['mean']:.0f}% | "
                     f"[{100 * own['ci95'][0]:.0f}, {100 * own['ci95'][1]:.0f}] / "
                     f"[{100 * carried['ci95'][0]:.0f}, {100 * carried['ci95'][1]:.0f}] |")
    h = summary["harm"]
    lines += ["", f"harm: {h['seeds_below_zero_shot']} shipped models below zero-shot by more than one standard "
                  f"error, {h['collapsed_shipped']} collapsed ({json.dumps(h['by_method'])})"]
    changed = {n: c for n, c in h.get("rule_changed_choice", {}).items() if c}
    lines += ["", "the do-no-harm rule shipped what the best validation score alone would have shipped"
              + (f", except: {json.dumps(changed)}" if changed else ", on every seed")]
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FedProxyError as e:  # a clear message, not a traceback
        sys.exit(f"error: {e}")
