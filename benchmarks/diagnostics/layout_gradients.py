"""Do packed rows and right-padded batches train the same? Gradients of one client step, compared.

Usage:
    python benchmarks/diagnostics/layout_gradients.py PROXY_DIR [--seed 0] [--batches 2] [--out runs/layout_gradients.json]

``PROXY_DIR`` is a saved proxy (e.g. ``runs/default/work/fedproxy/proxy``). For each client
of the default benchmark and ``--batches`` training batches of ``fed.batch_size`` examples
drawn with the seed, computes the gradient of the label loss over all block parameters in
four ways (padded or packed, fp32 or bf16 autocast) and prints each one's relative L2 error
against fp32 on padded batches, the exact reference. If packed fp32 matches padded fp32 to
float rounding and the two bf16 layouts are equally far from it, the layouts differ only in
rounding, and a result that moves with the layout moves with rounding noise.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from fedproxy.config import RunConfig
from fedproxy.data import load_benchmark
from fedproxy.data.encode import Encoder
from fedproxy.modeling import autocast, bf16_supported, load_pretrained
from fedproxy.objectives import label_loss

# (name, packed, bf16) of the layouts compared with padded fp32.
LAYOUTS = [("packed", True, False), ("padded", False, True), ("packed", True, True)]


def gradient(model, names: list[str], batch, packed: bool, bf16: bool) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    with autocast(torch.device("cpu"), bf16):
        label_loss(model, batch, packed=packed).backward()
    own = dict(model.named_parameters())
    return torch.cat([own[n].grad.flatten() for n in names])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("proxy_dir", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if not bf16_supported(torch.device("cpu")):
        raise SystemExit("this CPU has no bf16 support, so training runs in fp32 where the layouts agree")
    cfg = RunConfig()
    proxy, tok = load_pretrained(args.proxy_dir)  # the model and its tokenizer; the proxy map is not needed
    bench = load_benchmark(cfg.data, args.seed, server_text=False)
    enc = Encoder(tok, bench, cfg.data.max_length)
    names = [n for n, _ in proxy.named_parameters() if ".layers." in n]
    for n, q in proxy.named_parameters():
        q.requires_grad_(n in names)
    proxy.train()
    rng = random.Random(args.seed)
    rows = []
    for client, examples in zip(bench.client_names, bench.train):
        for _ in range(args.batches):
            batch = enc.batch(rng.sample(examples, cfg.fed.batch_size), with_label=True)
            ref = gradient(proxy, names, batch, packed=False, bf16=False)
            row = {"client": client}
            for layout, packed, bf16 in LAYOUTS:
                g = gradient(proxy, names, batch, packed, bf16)
                row[f"{layout} {'bf16' if bf16 else 'fp32'}"] = float((g - ref).norm() / ref.norm())
            rows.append(row)
    keys = [k for k in rows[0] if k != "client"]
    print(f"relative L2 error of the block gradients against padded fp32 ({len(names)} tensors, "
          f"{len(rows)} batches of {cfg.fed.batch_size}, seed {args.seed})")
    print("| client | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for r in rows:
        print(f"| {r['client']} | " + " | ".join(f"{r[k]:.2e}" for k in keys) + " |")
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    print("| mean | " + " | ".join(f"{mean[k]:.2e}" for k in keys) + " |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"seed": args.seed, "proxy_dir": str(args.proxy_dir), "rows": rows,
                                        "mean": mean}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
