"""The README's results table, built from the committed multi-seed summaries (benchmarks/results/).

Usage:
    python benchmarks/results_table.py benchmarks/results/multiemo-converge.json benchmarks/results/qa-converge.json

One column pair per summary (the benchmark's score, mean ± std over its seeds, and the share of the
centralized gain with its 95% bootstrap CI over seeds x test examples, from `benchmarks/seeds.py`),
then the paired differences behind the project's promises. Nothing is computed here that the
summaries do not hold, so the README cannot drift from them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROWS = {  # summary method -> what the row says
    "zero-shot": "LLM zero-shot",
    "fedproxy": "FedProxy, the fused LLM as shipped",
    "proxy-alone": "FedProxy, the proxy alone (what a client holds)",
    "offsite-tuning": "Offsite-Tuning (distilled emulator), as shipped",
    "proxy-centralized": "the proxy trained on pooled data, plugged in",
    "centralized-kept": "the kept LLM blocks trained in place on pooled data",
    "centralized": "centralized: the whole LLM on pooled data (no privacy, no IP protection)",
}
PROMISES = {"fedproxy - offsite-tuning": "FedProxy minus Offsite-Tuning",
            "fedproxy - proxy-alone": "FedProxy minus the proxy alone (the IP gap)",
            "proxy-centralized - fedproxy": "pooled minus federated proxy (what federation costs)",
            "centralized-kept - proxy-centralized": "kept blocks in place minus the plugged-in pooled proxy"}


def _ci(x: dict, pct: bool = False) -> str:
    if pct:
        return f"{100 * x['mean']:.0f}% [{100 * x['ci95'][0]:.0f}, {100 * x['ci95'][1]:.0f}]"
    return f"{x['mean']:+.3f} [{x['ci95'][0]:+.3f}, {x['ci95'][1]:+.3f}]"


def table(summaries: list[dict]) -> str:
    head = "| method | " + " | ".join(
        f"`{s['benchmark']}` {s['metric']} ({len(s['seeds'])} seed{'s' * (len(s['seeds']) > 1)}) | share of the gain [95% CI]"
        for s in summaries) + " |"
    lines = [head, "|---" * (1 + 2 * len(summaries)) + "|"]
    for key, label in ROWS.items():
        cells = []
        for s in summaries:
            m = s["methods"].get(key)
            score = (f"{m['score']['mean']:.3f} ± {m['score']['std']:.3f}" if m and len(s["seeds"]) > 1
                     else f"{m['score']['mean']:.3f}" if m
                     else f"{m2:.3f}" if key == "proxy-alone" and (m2 := s["methods"]["fedproxy"].get("proxy_alone"))
                     else "-")
            gain = s.get("gain_recovered_by_method", {}).get(key)
            cells += [score, _ci(gain, pct=True) if gain else "-"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "| paired difference [95% CI] | " + " | ".join(f"`{s['benchmark']}`" for s in summaries) + " |",
              "|---" * (1 + len(summaries)) + "|"]
    for key, label in PROMISES.items():
        lines.append(f"| {label} | " + " | ".join(_ci(s["paired"][key]) if key in s["paired"] else "-"
                                                    for s in summaries) + " |")
    for key, label in (("client_gain", "FedProxy's proxy: its own gain, as a share of the centralized gain"),
                       ("carried_over", "the share of the proxy's own gain the fused LLM carries")):
        lines.append(f"| {label} | " + " | ".join(
            _ci(t[key], pct=True) if (t := s.get("transfer", {}).get("fedproxy")) else "-" for s in summaries) + " |")
    lines.append("| shipped models below zero-shot by > 1 s.e. / collapsed (do no harm) | " + " | ".join(
        f"{s['harm']['seeds_below_zero_shot']} / {s['harm']['collapsed_shipped']}" for s in summaries) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("summaries", nargs="+", type=Path, help="multi-seed summaries written by benchmarks/seeds.py")
    args = p.parse_args(argv)
    print(table([json.loads(f.read_text()) for f in args.summaries]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
