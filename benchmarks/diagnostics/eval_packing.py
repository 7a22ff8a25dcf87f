"""Scoring on packed rows vs padded batches: same scores, less time.

Usage:
    python benchmarks/diagnostics/eval_packing.py [--seed 0] [--repeats 2] [--pack-tokens 512 2048] [--out runs/eval_packing.json]

Scores every test example of the default benchmark (batches of 32, as the evaluation does)
with the full LLM and with a keep-ratio-0.5 proxy (uniform blocks, as benchmarks/perf.py),
once on the right-padded batches and once on packed rows (``fedproxy.objectives.pack``), in
one process, alternating, best of ``--repeats``. Prints the time ratio, the padding share of
the padded batches, the largest score difference and both accuracies, for each packed-row
size in ``--pack-tokens`` (the default is what scoring uses, ``objectives.PACK_TOKENS``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fedproxy.compress import build_proxy
from fedproxy.compress.uniform import uniform_keep
from fedproxy.config import RunConfig
from fedproxy.data import load_benchmark
from fedproxy.data.encode import Encoder, batches
from fedproxy.modeling import blocks, load_pretrained, resolve_checkpoint
from fedproxy import objectives
from fedproxy.objectives import padding_fraction, score_first_tokens


@torch.no_grad()
def score_all(model, enc: Encoder, examples, packed: bool) -> tuple[float, torch.Tensor, torch.Tensor]:
    firsts = [t[0] for t in enc.label_tokens]
    t0 = time.perf_counter()
    out = [score_first_tokens(model, enc.batch(chunk, with_label=True), firsts, packed)[0]
           for chunk in batches(examples, 32)]
    return time.perf_counter() - t0, torch.cat(out), torch.tensor([e.label for e in examples])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--pack-tokens", type=int, nargs="+", default=[objectives.PACK_TOKENS])
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    cfg = RunConfig()
    llm, tok = load_pretrained(resolve_checkpoint(cfg.model.source))
    bench = load_benchmark(cfg.data, args.seed)
    enc = Encoder(tok, bench, cfg.data.max_length)
    if not enc.first_token_scoring:
        raise SystemExit("this benchmark's labels share a first token; the script times first-token scoring only")
    examples = [e for test in bench.test for e in test]
    padding = padding_fraction(enc, batches(examples, 32))
    n = len(blocks(llm))
    models = {"full-llm": llm, "proxy": build_proxy(llm, uniform_keep(n, round(cfg.compress.keep_ratio * n))).eval()}
    rows = []
    for name, model in models.items():
        for cap in args.pack_tokens:
            objectives.PACK_TOKENS = cap  # read at call time by objectives.pack
            best = {False: float("inf"), True: float("inf")}
            scores = {}
            for _ in range(args.repeats):
                for packed in (False, True):
                    sec, s, gold = score_all(model, enc, examples, packed)
                    best[packed], scores[packed] = min(best[packed], sec), s
            acc = {k: float((v.argmax(1) == gold).float().mean()) for k, v in scores.items()}
            rows.append({"model": name, "pack_tokens": cap, "examples": len(examples), "padded_s": best[False],
                         "packed_s": best[True], "speedup": best[False] / best[True],
                         "max_abs_score_diff": float((scores[True] - scores[False]).abs().max()),
                         "accuracy_padded": acc[False], "accuracy_packed": acc[True]})
    print(f"{len(examples)} test examples in batches of 32; padding {padding:.0%} of the padded tokens; "
          f"threads {torch.get_num_threads()}; best of {args.repeats}")
    print("| model | packed row tokens | padded s | packed s | speedup | max abs score diff "
          "| accuracy padded / packed |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['pack_tokens']} | {r['padded_s']:.1f} | {r['packed_s']:.1f} | "
              f"{r['speedup']:.2f}x | {r['max_abs_score_diff']:.1e} | "
              f"{r['accuracy_padded']:.4f} / {r['accuracy_packed']:.4f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"seed": args.seed, "padding_fraction": padding, "rows": rows},
                                       indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
