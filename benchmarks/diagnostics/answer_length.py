"""Where does a fused LLM lose to its own proxy on a generation benchmark? Split by answer length.

Usage (the numbers in docs/results.md, "converge-qa, seed 2"):
    python benchmarks/diagnostics/answer_length.py benchmarks/results/records/qa-converge/seed1.json.gz \
        benchmarks/results/records/qa-converge/seed2.json.gz --out runs/answer_length.json

Reads seed records (benchmarks/records.py) or run reports (``report.json``), nothing else: no
model runs. For every method that fuses a proxy (``proxy_after_fl`` present), prints each test
split's mean answer length in words for the fused LLM and for its proxy alone, and splits the
fused-minus-proxy token F1 by whether the fused answer has more, the same or fewer words than
the proxy's on the same example (each part is a sum over those examples divided by all test
examples, so the three add up to the score difference). Methods without a proxy print their
lengths for reference. Diagnostic only: no method uses it.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path


def words(outputs: list[str]) -> float:
    """Mean answer length in whitespace-separated words."""
    return sum(len(o.split()) for o in outputs) / max(1, len(outputs))


def length_split(fused: dict, proxy: dict) -> dict:
    """Fused-minus-proxy score split by the fused answer being longer, as long or shorter (in words).

    ``fused`` and ``proxy`` are ``per_client`` tables of one method ({split: {"outputs", "scores"}}),
    on the same examples in the same order. Returns {"longer"|"same"|"shorter": {"examples", "diff"}}
    with ``diff`` a sum over that group divided by all examples, so the three diffs add up to the
    difference of the mean scores."""
    groups = {g: {"examples": 0, "diff": 0.0} for g in ("longer", "same", "shorter")}
    n = 0
    for split, f in fused.items():
        p = proxy[split]
        if len(f["outputs"]) != len(p["outputs"]):
            raise ValueError(f"split {split!r}: {len(f['outputs'])} fused answers against {len(p['outputs'])} "
                             "of the proxy; both must score the same test examples")
        for fo, po, fs, ps in zip(f["outputs"], p["outputs"], f["scores"], p["scores"]):
            lf, lp = len(fo.split()), len(po.split())
            g = groups["longer" if lf > lp else "shorter" if lf < lp else "same"]
            g["examples"] += 1
            g["diff"] += fs - ps
            n += 1
    for g in groups.values():
        g["diff"] /= max(1, n)
    return groups


def read_methods(path: Path) -> tuple[int, dict]:
    """(seed, methods) of a seed record (``.json.gz``) or a run's ``report.json``."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        data = json.load(f)
    return data.get("seed", data.get("config", {}).get("seed")), data["methods"]


def summarize(path: Path) -> dict:
    seed, methods = read_methods(path)
    out = {"source": str(path), "seed": seed, "methods": {}}
    for name, m in sorted(methods.items()):
        pc = m.get("per_client", {})
        if not pc or "outputs" not in next(iter(pc.values())):
            continue  # a classification method, or one without answers
        row = {"score": m["score"], "words": {s: round(words(v["outputs"]), 2) for s, v in pc.items()}}
        after = m.get("proxy_after_fl", {}).get("per_client")
        if after:
            row["proxy_score"] = m["proxy_after_fl"]["score"]
            row["proxy_words"] = {s: round(words(v["outputs"]), 2) for s, v in after.items()}
            row["fused_minus_proxy"] = length_split(pc, after)
        out["methods"][name] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sources", nargs="+", type=Path, help="seed records (.json.gz) or run report.json files")
    ap.add_argument("--out", type=Path, help="also write the tables as JSON here")
    args = ap.parse_args(argv)
    results = [summarize(p) for p in args.sources]
    for r in results:
        print(f"seed {r['seed']} ({r['source']})")
        for name, row in r["methods"].items():
            print(f"  {name:18s} score {row['score']:.3f}  words {row['words']}")
            if "proxy_words" in row:
                split = ", ".join(f"{g} {v['examples']} ex. {v['diff']:+.3f}" for g, v in row["fused_minus_proxy"].items())
                print(f"  {'':18s} proxy {row['proxy_score']:.3f}  words {row['proxy_words']}")
                print(f"  {'':18s} fused - proxy {row['score'] - row['proxy_score']:+.3f}: {split}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
