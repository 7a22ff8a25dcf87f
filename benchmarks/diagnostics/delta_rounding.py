"""How big is a federated update next to bf16's rounding, and how alike are the updates of two runs?

Usage:
    python benchmarks/diagnostics/delta_rounding.py BASE_PROXY NAME=TUNED_PROXY [NAME=TUNED_PROXY ...] [--out FILE]

``BASE_PROXY`` is the proxy as the server sent it (``<run>/work/fedproxy/proxy``) and each
``TUNED_PROXY`` the same proxy after federation (``<run>/work/fedproxy/proxy_tuned``) of a run
that started from it. For each run, prints the update's size against the weights: the
relative L2 norm and the median number of bf16 steps (units in the last place of the
weight's bf16 value, 2^-7 of its power of two) that an element moved. Then the cosine
between every two runs' updates (all block tensors and the final norm, as one vector).
Under bf16 autocast the forward pass sees the weights rounded to bf16, so an update of a few
bf16 steps is largely rounded away while it is being learned.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
from safetensors.torch import load_file


def updates(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tuned minus base over the tensors federation trains (blocks and the final norm)."""
    return {k: tuned[k] - base[k] for k in base if ".layers." in k or k == "model.norm.weight"}


def bf16_steps(weight: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """|update| in units of the bf16 spacing at ``weight`` (8 significant bits)."""
    _, exp = torch.frexp(weight.float())  # weight = mantissa * 2**exp, mantissa in [0.5, 1)
    return update.abs() / torch.ldexp(torch.ones_like(weight, dtype=torch.float32), exp - 8)


def summarize(base: dict[str, torch.Tensor], runs: dict[str, dict[str, torch.Tensor]]) -> dict:
    out: dict = {"runs": {}, "cosine": {}}
    norm = {name: sum(float(v.pow(2).sum()) for v in upd.values()) ** 0.5 for name, upd in runs.items()}
    for name, upd in runs.items():
        wnorm = sum(float(base[k].pow(2).sum()) for k in upd) ** 0.5
        steps = torch.cat([bf16_steps(base[k], v).flatten() for k, v in upd.items() if base[k].dim() == 2])
        sample = steps[torch.randperm(steps.numel(), generator=torch.Generator().manual_seed(0))[:2_000_000]]
        out["runs"][name] = {"relative_norm": norm[name] / wnorm, "median_bf16_steps": float(sample.median()),
                             "share_below_one_step": float((sample < 1).float().mean())}
    for a, b in itertools.combinations(runs, 2):
        dot = sum(float((runs[a][k] * runs[b][k]).sum()) for k in runs[a])
        out["cosine"][f"{a} vs {b}"] = dot / (norm[a] * norm[b])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", type=Path)
    p.add_argument("runs", nargs="+", metavar="NAME=TUNED_PROXY")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    base = load_file(str(args.base / "model.safetensors"))
    runs = {}
    for spec in args.runs:
        name, sep, path = spec.partition("=")
        if not sep:
            raise SystemExit(f"'{spec}' is not NAME=TUNED_PROXY, e.g. bf16=runs/x/work/fedproxy/proxy_tuned")
        runs[name] = updates(base, load_file(str(Path(path) / "model.safetensors")))
    res = summarize(base, runs)
    print("| run | update / weights (L2) | median update in bf16 steps (matrices) | share of elements under one step |")
    print("|---|---|---|---|")
    for name, r in res["runs"].items():
        print(f"| {name} | {r['relative_norm']:.4f} | {r['median_bf16_steps']:.2f} | {r['share_below_one_step']:.0%} |")
    print("| runs | cosine of their updates |")
    print("|---|---|")
    for pair, c in res["cosine"].items():
        print(f"| {pair} | {c:.3f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"base": str(args.base), **res}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
