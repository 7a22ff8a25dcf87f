"""Greedy answers the way the evaluation makes them vs the plain way: same answers, less time.

Usage (the figures in docs/results.md, "Cost"):
    python benchmarks/diagnostics/decode_speed.py [--config converge-qa] [--examples 240] [--repeats 2] \
        [--parts answers loss] [--out runs/decode_speed.json]

Answers the server-validation examples of a generation preset (batches of 32 sorted by prompt
length, as the evaluation does) with the full LLM and with a keep-ratio-0.5 proxy (uniform blocks,
as benchmarks/perf.py), both ways in one process, alternating, best of ``--repeats``:

- ``answers``: ``model.generate`` (every row stays in the batch until the last has stopped) vs
  ``fedproxy.eval.generate.greedy_tokens`` (a row leaves the batch and the KV cache at its stop token);
- ``loss``: answers and the reference's loss, from a loss pass of its own (packed rows,
  ``objectives.sequence_logprob``) plus ``greedy_tokens`` vs ``greedy_tokens_and_loss`` (one pass
  over prompt and reference serves both).

Prints the time ratio, how many answers agree, the largest loss difference, and the mean and largest
answer length in tokens (the longest row sets how long ``generate`` runs a batch).
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
from fedproxy.eval.generate import (
    answer_texts,
    greedy_tokens,
    greedy_tokens_and_loss,
    left_padded,
)
from fedproxy.modeling import blocks, load_pretrained, resolve_checkpoint
from fedproxy.objectives import sequence_logprob


@torch.no_grad()
def generate_tokens(model, ids: torch.Tensor, mask: torch.Tensor, max_new: int, stop_ids: list[int]) -> list[list[int]]:
    """:func:`greedy_tokens` through ``model.generate``: each row up to its first stop token."""
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new,
                         pad_token_id=0, eos_token_id=stop_ids or None)[:, ids.shape[1]:].tolist()
    stops = set(stop_ids)
    return [row[: next((i + 1 for i, t in enumerate(row) if t in stops), len(row))] for row in out]


def _plain_answers(model, enc: Encoder, chunk) -> tuple[list[list[int]], list[float]]:
    ids, mask = left_padded(enc, chunk, torch.device("cpu"))
    return generate_tokens(model, ids, mask, enc.max_answer, enc.stop_ids), []


def _answers(model, enc: Encoder, chunk) -> tuple[list[list[int]], list[float]]:
    ids, mask = left_padded(enc, chunk, torch.device("cpu"))
    return greedy_tokens(model, ids, mask, enc.max_answer, enc.stop_ids), []


@torch.no_grad()
def _answers_then_loss(model, enc: Encoder, chunk) -> tuple[list[list[int]], list[float]]:
    gold = enc.batch(chunk, with_label=True)
    lengths = torch.tensor([len(x) for x in gold.label_ids])
    nll = (-sequence_logprob(model, gold) / lengths).tolist()
    return _answers(model, enc, chunk)[0], nll


def _answers_and_loss(model, enc: Encoder, chunk) -> tuple[list[list[int]], list[float]]:
    ids, mask = left_padded(enc, chunk, torch.device("cpu"))
    rows, nll = greedy_tokens_and_loss(model, ids, mask, [enc.continuation(e) for e in chunk], enc.max_answer,
                                       enc.stop_ids)
    return rows, nll.tolist()


WAYS = {"answers": (("generate", _plain_answers), ("greedy_tokens", _answers)),
        "loss": (("loss pass + greedy_tokens", _answers_then_loss), ("greedy_tokens_and_loss", _answers_and_loss))}


def answer_all(model, enc: Encoder, examples, way) -> tuple[float, list[str], list[int], list[float]]:
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].text))
    answers, losses, lengths = [""] * len(examples), [0.0] * len(examples), []
    t0 = time.perf_counter()
    for idx in batches(order, 32):
        rows, nll = way(model, enc, [examples[i] for i in idx])
        lengths.extend(map(len, rows))
        for k, (i, a) in enumerate(zip(idx, answer_texts(enc, rows))):
            answers[i], losses[i] = a, nll[k] if nll else 0.0
    return time.perf_counter() - t0, answers, lengths, losses


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="converge-qa", help="a generation preset (its model, data and seed)")
    p.add_argument("--examples", type=int, default=240, help="server-validation examples answered")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--parts", nargs="+", choices=list(WAYS), default=list(WAYS))
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
    for part in args.parts:
        (old, old_way), (new, new_way) = WAYS[part]
        for name, model in models.items():
            best, got = {old: float("inf"), new: float("inf")}, {}
            for _ in range(args.repeats):
                for way, fn in ((old, old_way), (new, new_way)):
                    sec, answers, lengths, losses = answer_all(model, enc, examples, fn)
                    best[way], got[way] = min(best[way], sec), (answers, lengths, losses)
            lengths = got[new][1]
            rows.append({"part": part, "model": name, "examples": len(examples), "before": old, "after": new,
                         "before_s": best[old], "after_s": best[new], "speedup": best[old] / best[new],
                         "same_answers": sum(a == b for a, b in zip(got[old][0], got[new][0])),
                         "max_abs_loss_diff": max(abs(a - b) for a, b in zip(got[old][2], got[new][2])),
                         "mean_answer_tokens": sum(lengths) / len(lengths), "max_answer_tokens": max(lengths)})
    print(f"{args.config}: {len(examples)} server-validation examples in batches of 32, at most "
          f"{enc.max_answer} answer tokens; threads {torch.get_num_threads()}; best of {args.repeats}")
    columns = {"model": "{model}", "before": "{before}", "after": "{after}", "before s": "{before_s:.1f}",
               "after s": "{after_s:.1f}", "speedup": "{speedup:.2f}x", "same answers": "{same_answers} of {examples}",
               "max loss diff": "{max_abs_loss_diff:.1e}",
               "answer tokens mean / max": "{mean_answer_tokens:.1f} / {max_answer_tokens}"}
    print("| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|")
    for r in rows:
        print("| " + " | ".join(f.format(**r) for f in columns.values()) + " |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"config": args.config, "threads": torch.get_num_threads(), "rows": rows},
                                       indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
