"""How much does the fusion recipe matter? Every (variant, scale) on a finished run, on server
validation (what the run may use to choose) and on the test splits (what it cannot see).

Usage:
    python benchmarks/diagnostics/fusion_grid.py runs/default [runs/other ...] --out runs/fusion_grid.json
    python benchmarks/diagnostics/fusion_grid.py runs/default --variants source --parts all mlp attn

Each row also has the test recall of every class (0: no example of that class predicted right);
on a generation benchmark (token F1) the mean answer length in words instead. ``--proxy-alone``
also scores the tuned proxy on validation. ``--val-only`` skips the test splits (minutes per
candidate on 1,000 generated answers): what the run itself could see, for choosing which
recipes deserve a test.
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
from fedproxy.eval import headline
from fedproxy.fuse import VARIANTS, fuse_state
from fedproxy.modeling import load_params, load_pretrained, snapshot
from fedproxy.report import class_recall, format_recall

from answer_length import words  # benchmarks/diagnostics/answer_length.py, beside this script


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


def grid(run: Path, scales: list[float], variants=VARIANTS, parts=("all",), test: bool = True,
         proxy_alone: bool = False) -> dict:
    report, ctx, pmap, delta, llm_state = open_run(run, "fusion_grid")
    rows, alone = [], None
    if proxy_alone:  # the tuned proxy on its own, on validation: what the fused LLM is compared with
        tuned, _ = load_pretrained(run / "work" / "fedproxy" / "proxy_tuned")
        val = ctx.val_eval(tuned.to(ctx.device), loss=False)
        alone = {"val_accuracy": headline(val), **({"val_words": round(words(val["outputs"]), 2)} if "outputs" in val else {})}
        print(f"{run.name}: the tuned proxy alone: val {alone['val_accuracy']:.3f}"
              + (f" ({alone['val_words']} words)" if "val_words" in alone else ""), flush=True)
        del tuned
    for part in parts:
        for variant in variants:
            for scale in scales:
                load_params(ctx.llm, fuse_state(llm_state, part_of(delta, part), pmap, variant, scale))
                val = ctx.val_eval(ctx.llm, loss=False)
                row = {"part": part, "variant": variant, "scale": scale, "val_accuracy": headline(val)}
                line = f"{run.name}: {part} {variant} x{scale:g}: val {row['val_accuracy']:.3f}"
                if "outputs" in val:  # a generation benchmark: how long the answers are
                    row["val_words"] = round(words(val["outputs"]), 2)
                    line += f" ({row['val_words']} words)"
                if test:
                    t = ctx.evaluate(ctx.llm, loss=False)
                    row["test_accuracy"] = headline(t)
                    if "confusion" in t:
                        row["test_recall"] = class_recall(t["confusion"])
                        line += f" test {row['test_accuracy']:.3f} (recall " + " ".join(
                            f"{name} {r}" for name, r in zip(ctx.bench.labels, format_recall(row["test_recall"]))) + ")"
                    else:
                        row["test_words"] = {c: round(words(v["outputs"]), 2) for c, v in t["per_client"].items()}
                        line += f" test {row['test_accuracy']:.3f} (words {row['test_words']})"
                rows.append(row)
                print(line, flush=True)
    shipped = report["methods"].get("fedproxy")  # absent from a report written before FedProxy finished
    chosen = ({"variant": shipped["fusion"]["variant"], "scale": shipped["fusion"]["scale"],
               "test_accuracy": headline(shipped)} if shipped else None)
    return {"seed": ctx.cfg.seed, "chosen": chosen, "proxy_alone": alone, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 6.0])
    p.add_argument("--out", type=Path, default=Path("runs/fusion_grid.json"))
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--parts", nargs="+", choices=list(PARTS), default=["all"])
    p.add_argument("--val-only", action="store_true", help="score validation only, not the test splits")
    p.add_argument("--proxy-alone", action="store_true", help="also score the tuned proxy alone on validation")
    args = p.parse_args(argv)
    results = {str(r): grid(r, args.scales, args.variants, args.parts, not args.val_only, args.proxy_alone)
               for r in args.runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    if args.val_only:
        return 0
    def recipe(row: dict) -> str:
        return f"{row.get('part', 'all')} {row['variant']} x{row['scale']:g}"

    lines = ["| run | chosen on val | its test acc | best test acc in grid (oracle) |", "|---|---|---|---|"]
    for run, r in results.items():
        oracle, chosen = max(r["rows"], key=lambda x: x["test_accuracy"]), r["chosen"]
        shipped = f"{recipe(chosen)} | {chosen['test_accuracy']:.3f}" if chosen else "(not in the report) | -"
        lines.append(f"| {run} | {shipped} | {oracle['test_accuracy']:.3f} ({recipe(oracle)}) |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
