"""How much does the fusion recipe matter? Every (variant, scale) on a finished run, on server
validation (what the run may use to choose) and on the test splits (what it cannot see).

Usage:
    python benchmarks/diagnostics/fusion_grid.py runs/default [runs/other ...] --out runs/fusion_grid.json
    python benchmarks/diagnostics/fusion_grid.py runs/default --variants source --parts all mlp attn

Each row also has the test recall of every class (0: no example of that class predicted right).
``--parts`` fuses only part of each block's delta (``mlp``: the feed-forward tensors, ``attn``:
attention, ``norm``: the norms), to see which parts of what the proxy learned carry over.

Reads ``<run>/report.json`` (config, seed) and the run's saved proxies
``<run>/work/fedproxy/{proxy,proxy_tuned}``; no training. The gap between the test accuracy
of the validation-chosen recipe and the best test accuracy in the grid is what a better
recipe choice could still gain; the grid's best is an oracle, never reported as a result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fedproxy.api import proxy_delta
from fedproxy.config import RunConfig
from fedproxy.context import build_context
from fedproxy.fuse import VARIANTS, fuse_state
from fedproxy.modeling import load_params, snapshot
from fedproxy.report import class_recall, format_recall


PARTS = {"all": ("",), "mlp": (".mlp.",), "attn": (".self_attn.",), "norm": ("norm.",)}


def part_of(delta: dict, part: str) -> dict:
    return {k: v for k, v in delta.items() if any(tag in k for tag in PARTS[part])}


def open_run(run: Path, scratch: str):
    """A finished run's (report, context, proxy map, FedProxy delta, the LLM's own state).

    The context rebuilds the run's LLM and data from its config; ``scratch`` names the folder
    under ``run`` it may write to.
    """
    report = json.loads((run / "report.json").read_text())
    ctx = build_context(RunConfig.from_dict(report["config"]), run / scratch, progress=False)
    _, pmap, delta = proxy_delta(run / "work" / "fedproxy" / "proxy", run / "work" / "fedproxy" / "proxy_tuned")
    return report, ctx, pmap, delta, snapshot(ctx.llm)


def grid(run: Path, scales: list[float], variants=VARIANTS, parts=("all",)) -> dict:
    report, ctx, pmap, delta, llm_state = open_run(run, "fusion_grid")
    rows = []
    for part in parts:
        for variant in variants:
            for scale in scales:
                load_params(ctx.llm, fuse_state(llm_state, part_of(delta, part), pmap, variant, scale))
                test = ctx.evaluate(ctx.llm)
                rows.append({"part": part, "variant": variant, "scale": scale, "val_accuracy": ctx.val_accuracy(ctx.llm),
                             "test_accuracy": test["accuracy"], "test_recall": class_recall(test["confusion"])})
                recall = " ".join(f"{name} {r}"
                                  for name, r in zip(ctx.bench.labels, format_recall(rows[-1]["test_recall"])))
                print(f"{run.name}: {part} {variant} x{scale:g}: val {rows[-1]['val_accuracy']:.3f} "
                      f"test {rows[-1]['test_accuracy']:.3f} (recall {recall})", flush=True)
    chosen = report["methods"]["fedproxy"]["fusion"]
    return {"seed": ctx.cfg.seed, "chosen": {"variant": chosen["variant"], "scale": chosen["scale"]},
            "chosen_test_accuracy": report["methods"]["fedproxy"]["accuracy"], "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 6.0])
    p.add_argument("--out", type=Path, default=Path("runs/fusion_grid.json"))
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--parts", nargs="+", choices=list(PARTS), default=["all"])
    args = p.parse_args(argv)
    results = {str(r): grid(r, args.scales, args.variants, args.parts) for r in args.runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    def recipe(row: dict) -> str:
        return f"{row.get('part', 'all')} {row['variant']} x{row['scale']:g}"

    lines = ["| run | chosen on val | its test acc | best test acc in grid (oracle) |", "|---|---|---|---|"]
    for run, r in results.items():
        oracle = max(r["rows"], key=lambda x: x["test_accuracy"])
        lines.append(f"| {run} | {recipe(r['chosen'])} | {r['chosen_test_accuracy']:.3f} | "
                     f"{oracle['test_accuracy']:.3f} ({recipe(oracle)}) |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
