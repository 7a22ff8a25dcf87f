"""Greedy answers with finished rows leaving the batch vs ``model.generate``: same answers, less time.

Usage (the figures in docs/results.md, "Cost"):
    python benchmarks/diagnostics/decode_speed.py [--config converge-qa] [--examples 240] [--repeats 2] \
        [--out runs/decode_speed.json]

Answers the server-validation examples of a generation preset (batches of 32 sorted by prompt
length, as the evaluation does) with the full LLM and with a keep-ratio-0.5 proxy (uniform blocks,
as benchmarks/perf.py), once through ``model.generate`` (every row stays in the batch until the
last has stopped) and once through ``fedproxy.eval.generate.greedy_tokens`` (a row leaves the batch
and the KV cache at its stop token), in one process, alternating, best of ``--repeats``. Prints the
time ratio, how many answers agree, and the mean and largest answer length in tokens (the longest
row sets how long ``generate`` runs a batch).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fedproxy.compress import build_proxy
from fedproxy.compress.uniform import uniform_keep
from fedproxy.config import load_config
from fedproxy.data import load_benchmark
from fedproxy.data.encode import Encoder, batches
from fedproxy.eval.generate import generate_answers, greedy_tokens
from fedproxy.modeling import blocks, load_pretrained, resolve_checkpoint


@torch.no_grad()
def generate_tokens(model, ids: torch.Tensor, mask: torch.Tensor, max_new: int, stop_ids: list[int]) -> list[list[int]]:
    """:func:`greedy_tokens` through ``model.generate``: each row up to its first stop token."""
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new,
                         pad_token_id=0, eos_token_id=stop_ids or None)[:, ids.shape[1]:].tolist()
    stops = set(stop_ids)
    return [row[: next((i + 1 for i, t in enumerate(row) if t in stops), len(row))] for row in out]


def answer_all(model, enc: Encoder, examples, decode) -> tuple[float, list[str], list[int]]:
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].text))
    lengths: list[int] = []

    def counted(*args):
        rows = decode(*args)
        lengths.extend(map(len, rows))
        return rows

    answers = [""] * len(examples)
    t0 = time.perf_counter()
    for idx in batches(order, 32):
        for i, a in zip(idx, generate_answers(model, enc, [examples[i] for i in idx], torch.device("cpu"), counted)):
            answers[i] = a
    return time.perf_counter() - t0, answers, lengths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="converge-qa", help="a generation preset (its model, data and seed)")
    p.add_argument("--examples", type=int, default=240, help="server-validation examples answered")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    llm, tok = load_pretrained(resolve_checkpoint(cfg.model.source))
    bench = load_benchmark(cfg.data, cfg.seed)
    if bench.task != "generation":
        raise SystemExit(f"--config {args.config} is a {bench.task} benchmark; this script times generation")
    enc = Encoder(tok, bench, cfg.data.max_length, cfg.data.max_answer)
    examples = bench.server_val[: args.examples]
    n = len(blocks(llm))
    models = {"full-llm": llm.eval(), "proxy": build_proxy(llm, uniform_keep(n, round(0.5 * n))).eval()}
    rows = []
    for name, model in models.items():
        best = {"generate": float("inf"), "greedy_tokens": float("inf")}
        got = {}
        for _ in range(args.repeats):
            for way, decode in (("generate", generate_tokens), ("greedy_tokens", greedy_tokens)):
                sec, answers, lengths = answer_all(model, enc, examples, decode)
                best[way], got[way] = min(best[way], sec), (answers, lengths)
        lengths = got["greedy_tokens"][1]
        rows.append({"model": name, "examples": len(examples), "generate_s": best["generate"],
                     "greedy_tokens_s": best["greedy_tokens"], "speedup": best["generate"] / best["greedy_tokens"],
                     "same_answers": sum(a == b for a, b in zip(*(got[w][0] for w in best))),
                     "mean_answer_tokens": sum(lengths) / len(lengths), "max_answer_tokens": max(lengths)})
    print(f"{args.config}: {len(examples)} server-validation examples in batches of 32, at most "
          f"{enc.max_answer} answer tokens; threads {torch.get_num_threads()}; best of {args.repeats}")
    print("| model | generate s | greedy_tokens s | speedup | same answers | answer tokens mean / max |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['generate_s']:.1f} | {r['greedy_tokens_s']:.1f} | {r['speedup']:.2f}x | "
              f"{r['same_answers']} of {r['examples']} | {r['mean_answer_tokens']:.1f} / {r['max_answer_tokens']} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"config": args.config, "threads": torch.get_num_threads(), "rows": rows},
                                       indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
