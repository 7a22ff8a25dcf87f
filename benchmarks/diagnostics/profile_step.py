"""Where a client training step spends its time (torch.profiler), before optimizing.

Usage:
    python benchmarks/diagnostics/profile_step.py --model proxy --steps 4 [--padded] [--compile] [--trace runs/trace.json]

Builds the default proxy (uniform keep-ratio 0.5 of SmolLM2-135M, as in benchmarks/perf.py)
or the full LLM, runs one warm-up and ``--steps`` profiled client steps with the default
client settings, and prints the operators sorted by self CPU time, the share of matmuls,
and how many of the processed tokens were padding.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import random
import time

import torch
from torch.profiler import ProfilerActivity, profile

from fedproxy.compress import build_proxy
from fedproxy.compress.uniform import uniform_keep
from fedproxy.config import RunConfig
from fedproxy.data import load_benchmark
from fedproxy.data.encode import Encoder, infinite_batches
from fedproxy.federated import local_train, trainable_names
from fedproxy.modeling import bf16_supported, blocks, load_pretrained, pick_device, resolve_checkpoint, snapshot
from fedproxy.objectives import padding_fraction

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear",
              "aten::_scaled_dot_product_flash_attention_for_cpu")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["proxy", "full-llm"], default="proxy")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--trace", help="also write a Chrome trace here")
    p.add_argument("--padded", action="store_true", help="train on right-padded batches (fed.pack=false)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the backbone (inductor, dynamic shapes); the warm-up step compiles")
    args = p.parse_args(argv)
    cfg = RunConfig()
    llm, tok = load_pretrained(resolve_checkpoint(cfg.model.source))
    n = len(blocks(llm))
    model = build_proxy(llm, uniform_keep(n, round(cfg.compress.keep_ratio * n))) if args.model == "proxy" else llm
    device = pick_device(cfg.device)
    model.to(device)
    bf16 = cfg.bf16 and bf16_supported(device)
    bench = load_benchmark(cfg.data, args.seed)
    enc = Encoder(tok, bench, cfg.data.max_length)
    names = trainable_names(model, cfg.fed)
    fed = dataclasses.replace(cfg.fed, local_steps=args.steps, pack=not args.padded)
    if args.compile:
        model.model.compile(dynamic=True)
    t0 = time.perf_counter()
    local_train(model, snapshot(model, names), bench.train[0], enc, dataclasses.replace(fed, local_steps=1), device,
                args.seed, bf16)
    warmup = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        res = local_train(model, snapshot(model, names), bench.train[0], enc, fed, device, args.seed, bf16)
    table = prof.key_averages()
    print(table.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    total = sum(e.self_cpu_time_total for e in table)
    mm = sum(e.self_cpu_time_total for e in table if e.key in MATMUL_OPS)
    opt = sum(e.cpu_time_total for e in table if e.key.startswith("Optimizer.step"))
    stream = infinite_batches(bench.train[0], cfg.fed.batch_size, random.Random(args.seed))
    padding = padding_fraction(enc, itertools.islice(stream, args.steps), packed=fed.pack)
    print(f"model {args.model}, bf16 autocast {bf16}, threads {torch.get_num_threads()}, compiled {args.compile}, "
          f"{res.metrics['tokens_per_s']:.0f} tokens/s (profiled), warm-up step {warmup:.1f} s")
    print(f"matmul/attention kernels: {mm / total:.0%} of self CPU time; optimizer step: {opt / total:.0%}")
    print(f"padding: {padding:.0%} of the processed tokens were padding ({'packed rows' if fed.pack else 'padded batches'})")
    if args.trace:
        prof.export_chrome_trace(args.trace)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
