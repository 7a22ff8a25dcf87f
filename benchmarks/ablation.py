"""Ablations on the default benchmark: one `fedproxy run` per variant, one table.

Usage (the tables in docs/results.md):
    python benchmarks/ablation.py --suite aggregators --out runs/ablation
    python benchmarks/ablation.py --suite transfer --out runs/ablation

Each variant is the default config plus the listed overrides, run with
methods=["fedproxy"] (plus any methods named in the variant); results are resumable
(--resume) and summarised in <out>/<suite>.json and on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fedproxy.cli import main as fedproxy_main

SUITES: dict[str, dict[str, list[str]]] = {
    "aggregators": {name: [f"fed.aggregator={name}"] for name in
                    ("fedavg", "fedavgm", "ties", "dare", "median", "fedproxy")},
    "transfer": {
        "default": [],
        "more-rounds (6x5)": ["fed.rounds=6", "fed.local_steps=5"],
        "prox_mu=0.1": ["fed.prox_mu=0.1"],
        "train-embeddings": ["fed.train_embeddings=true"],
        "loss-drop selection": ["compress.method=loss-drop"],
        "no distillation": ["compress.distill_steps=0"],
        "uniform selection": ["compress.method=uniform"],
        "fusion auto variant": ["fuse.variant=auto"],
    },
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), required=True)
    p.add_argument("--only", nargs="*", help="run only these variant names")
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    rows = {}
    for name, overrides in SUITES[args.suite].items():
        if args.only and name not in args.only:
            continue
        out = Path(args.out) / args.suite / name.split(" ")[0]
        sets = [x for o in ['methods=["fedproxy"]', f"seed={args.seed}", *overrides] for x in ("--set", o)]
        cmd = ["run", "--out", str(out), "--quiet", *sets] + (["--resume"] if args.resume else [])
        if fedproxy_main(cmd) != 0:
            return 1
        r = json.loads((out / "report.json").read_text())["methods"]["fedproxy"]
        rows[name] = {"overrides": overrides, "fused_accuracy": r["accuracy"],
                      "proxy_after_fl": r["proxy_after_fl"]["accuracy"],
                      "proxy_before_fl": r["proxy_before_fl"]["accuracy"],
                      "per_client": {k: v["accuracy"] for k, v in r["per_client"].items()},
                      "fusion": {"variant": r["fusion"]["variant"], "scale": r["fusion"]["scale"]},
                      "final_train_loss": r["federation"]["round_train_loss"][-1], "wall_seconds": r["wall_seconds"]}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, f"{args.suite}.json").write_text(json.dumps({"seed": args.seed, "rows": rows}, indent=2))
    print(f"| variant ({args.suite}, seed {args.seed}) | fused LLM acc | proxy before FL | proxy after FL "
          "| fusion | final train loss |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['fused_accuracy']:.3f} | {r['proxy_before_fl']:.3f} | {r['proxy_after_fl']:.3f} | "
              f"{r['fusion']['variant']} x{r['fusion']['scale']:g} | {r['final_train_loss']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
