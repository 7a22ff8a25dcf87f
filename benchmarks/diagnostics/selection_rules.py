"""Which validation score should choose the plug-in? Accuracy, label loss or balanced accuracy.

Usage:
    python benchmarks/diagnostics/selection_rules.py runs/seeds_fp32/seed0 [runs/... ...] --out runs/selection_rules.json

The fusion step tries each scale of the proxy's delta (0 = the unchanged LLM) on the server's
96 validation examples and keeps the best. With so few examples, and a label mix that differs
from the clients' test splits, accuracy can prefer a plug-in that is worse on test (seed 4 of
the five-seed table). For every run and scale this scores validation by accuracy, mean label
NLL and balanced accuracy (mean recall over the classes present), and the test splits by
accuracy; then it reports which scale each rule picks and that pick's test accuracy. Reads
``<run>/report.json`` and the run's saved proxies, like ``fusion_grid.py``; no training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fusion_grid import open_run

from fedproxy.eval.classify import evaluate
from fedproxy.fuse import fuse_state, tie_break
from fedproxy.modeling import load_params
from fedproxy.report import class_recall

# (name, score of a validation result; higher is better)
RULES = {
    "accuracy": lambda v: v["accuracy"],
    "label NLL": lambda v: -v["loss"],
    "balanced accuracy": lambda v: balanced_accuracy(v["confusion"]),
}


def balanced_accuracy(confusion: list[list[int]]) -> float:
    """Mean recall over the gold classes that occur (a constant prediction scores 1 / #classes)."""
    recalls = [r for r in class_recall(confusion) if r is not None]
    return sum(recalls) / len(recalls)


def pick(rows: list[dict], rule: str) -> dict:
    """The row a rule chooses; ties are broken as ``select_fusion`` breaks them."""
    return max(rows, key=lambda r: (RULES[rule](r["val"]), *tie_break(r)))


def study(run: Path, scales: list[float], variant: str) -> dict:
    _, ctx, pmap, delta, base = open_run(run, "selection_rules")
    rows = []
    for scale in scales:
        load_params(ctx.llm, fuse_state(base, delta, pmap, variant, scale))
        val = evaluate(ctx.llm, ctx.encoder, ctx.bench.server_val, ctx.device)
        test = ctx.evaluate(ctx.llm)
        rows.append({"scale": scale, "val": {k: val[k] for k in ("accuracy", "loss", "confusion")},
                     "test_accuracy": test["accuracy"], "test_confusion": test["confusion"]})
        print(f"{run.name} x{scale:g}: val acc {val['accuracy']:.3f} nll {val['loss']:.3f} "
              f"bal {balanced_accuracy(val['confusion']):.3f} | test acc {test['accuracy']:.3f}", flush=True)
    picks = {rule: {"scale": (p := pick(rows, rule))["scale"], "test_accuracy": p["test_accuracy"]} for rule in RULES}
    return {"run": str(run), "seed": ctx.cfg.seed, "variant": variant, "rows": rows, "picks": picks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--scales", nargs="+", type=float, default=[0.0, 1.0, 2.0, 3.0])
    ap.add_argument("--variant", default="source")
    ap.add_argument("--out", type=Path, default=Path("runs/selection_rules.json"))
    args = ap.parse_args()
    results = [study(run, args.scales, args.variant) for run in args.runs]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python benchmarks/diagnostics/selection_rules.py " + " ".join(
        map(str, args.runs)) + " --scales " + " ".join(f"{s:g}" for s in args.scales), "results": results}, indent=2))
    print("| rule | " + " | ".join(f"seed {r['seed']}" for r in results) + " | mean |")
    print("|---|" + "---|" * (len(results) + 1))
    for rule in RULES:
        accs = [r["picks"][rule]["test_accuracy"] for r in results]
        cells = [f"{r['picks'][rule]['test_accuracy']:.3f} (x{r['picks'][rule]['scale']:g})" for r in results]
        print(f"| {rule} | " + " | ".join(cells) + f" | {sum(accs) / len(accs):.3f} |")


if __name__ == "__main__":
    main()
