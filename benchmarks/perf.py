"""Client and server costs of FedProxy vs full-LLM fine-tuning vs Offsite-Tuning, in one run.

Usage (the table in docs/results.md):
    python benchmarks/perf.py --steps 6 --out runs/perf.json

Every training configuration runs in its own fresh process, so each peak RSS is its own.
Achieved FLOP/s uses an analytic count of matmul FLOPs per training step (forward through
all blocks, activation gradients down to the lowest trainable block, weight gradients of
trainable blocks; LM head only at label positions, as in training) and is compared with
the machine's peak matmul FLOP/s measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import torch


def peak_matmul_flops(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def _block_params(model, ids) -> list[int]:
    from fedproxy.modeling import blocks

    layers = blocks(model)
    return [sum(p.numel() for p in layers[i].parameters()) for i in ids]


def _train_worker(kind: str, model_dir: str, blocks_only: list[int] | None, steps: int, seed: int, queue) -> None:
    """Load only what a client would hold (the model in ``model_dir``) and time training steps."""
    import dataclasses
    import resource

    from fedproxy.config import RunConfig
    from fedproxy.data import load_benchmark
    from fedproxy.data.encode import Encoder
    from fedproxy.federated import local_train, trainable_names
    from fedproxy.modeling import bf16_supported, blocks, load_pretrained, pick_device, snapshot

    cfg = RunConfig()
    model, tok = load_pretrained(model_dir)
    device = pick_device(cfg.device)
    model.to(device)
    bf16 = cfg.bf16 and bf16_supported(device)
    bench = load_benchmark(cfg.data, seed)
    encoder = Encoder(tok, bench, cfg.data.max_length)
    fed = dataclasses.replace(cfg.fed, local_steps=steps)
    names = trainable_names(model, fed, blocks_only)
    # one warm-up step, then the measured steps
    local_train(model, snapshot(model, names), bench.train[0], encoder, dataclasses.replace(fed, local_steps=1),
                device, seed, bf16)
    res = local_train(model, snapshot(model, names), bench.train[0], encoder, fed, device, seed, bf16)
    n_blocks = len(blocks(model))
    per_block = _block_params(model, range(n_blocks))
    lowest = 0 if blocks_only is None else min(blocks_only)
    trainable_blocks = range(n_blocks) if blocks_only is None else blocks_only
    flops_per_token = 2 * sum(per_block) + 2 * sum(per_block[lowest:]) + 2 * sum(per_block[i] for i in trainable_blocks)
    tokens_per_s = res.metrics["tokens_per_s"]
    queue.put({"kind": kind, "tokens_per_s": tokens_per_s, "train_flops_per_s": tokens_per_s * flops_per_token,
               "trainable_params": sum(v.numel() for v in res.update.values()),
               "update_bytes": sum(v.numel() * 4 for v in res.update.values()),
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "bf16_autocast": bf16})


def prepare_models(workdir: Path, seed: int) -> dict[str, tuple[str, list[int] | None]]:
    """Save the proxy and the OT adapter+emulator to disk so each client process loads only those."""
    from fedproxy.baselines.offsite_tuning import adapter_size, ot_keep
    from fedproxy.compress import build_proxy
    from fedproxy.compress.uniform import uniform_keep
    from fedproxy.config import RunConfig
    from fedproxy.modeling import blocks, load_pretrained, resolve_checkpoint

    cfg = RunConfig()
    llm_dir = resolve_checkpoint(cfg.model.source)
    llm, tok = load_pretrained(llm_dir)
    n = len(blocks(llm))
    keep = ot_keep(n, cfg.compress.keep_ratio)
    a = adapter_size(n)
    out = {"full-llm": (str(llm_dir), None)}
    for kind, ids, only in (("proxy", uniform_keep(n, round(cfg.compress.keep_ratio * n)), None),
                            ("offsite-tuning", keep, list(range(a)) + list(range(len(keep) - a, len(keep))))):
        path = workdir / kind
        build_proxy(llm, ids).save_pretrained(path)
        tok.save_pretrained(path)
        out[kind] = (str(path), only)
    return out


def run_isolated(kind: str, model_dir: str, blocks_only, steps: int, seed: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_train_worker, args=(kind, model_dir, blocks_only, steps, seed, q))
    p.start()
    out = q.get()
    p.join()
    return out


def lora_bytes(model, r: int) -> int:
    from fedproxy.federated.lora import LORA_TARGETS

    total = 0
    for name, mod in model.named_modules():
        if name.split(".")[-1] in LORA_TARGETS and isinstance(mod, torch.nn.Linear):
            total += r * (mod.in_features + mod.out_features) * 4
    return total


def server_costs(seed: int) -> dict:
    from fedproxy.aggregate import AGGREGATORS, AggOptions
    from fedproxy.compress import compress
    from fedproxy.config import RunConfig
    from fedproxy.context import build_context
    from fedproxy.federated import trainable_names
    from fedproxy.fuse import fuse_state
    from fedproxy.modeling import snapshot

    cfg = RunConfig()
    ctx = build_context(cfg, Path("/tmp"), progress=False)
    t0 = time.perf_counter()
    comp = compress(ctx.llm, ctx.server_text_batches(cfg.compress.distill_batch), cfg.compress, ctx.device, seed,
                    ctx.bf16, progress=False)
    t_compress = time.perf_counter() - t0
    names = trainable_names(comp.proxy, cfg.fed)
    base = snapshot(comp.proxy, names)
    g = torch.Generator().manual_seed(seed)
    deltas = [{k: torch.randn(v.shape, generator=g) * 1e-3 for k, v in base.items()} for _ in range(4)]
    out = {"compress_seconds": t_compress}
    for agg in ("fedavg", "ties", "fedproxy"):
        t0 = time.perf_counter()
        merged = AGGREGATORS.get(agg)(deltas, [1, 1, 1, 1], AggOptions(density=0.2), {})
        out[f"aggregate_{agg}_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fuse_state(snapshot(ctx.llm), merged, comp.pmap)
    out["fuse_seconds"] = time.perf_counter() - t0
    proxy_bytes = sum(v.numel() * 4 for v in base.values())
    out["bytes_per_client_per_round"] = {
        "fedproxy (full proxy blocks, dense fp32)": {"up": proxy_bytes, "down": proxy_bytes},
        "fedproxy (LoRA r=8 on proxy)": {"up": lora_bytes(comp.proxy, 8), "down": proxy_bytes},
        "fedavg-lora (LoRA r=8 on full LLM)": {"up": lora_bytes(ctx.llm, 8),
                                               "down": sum(v.numel() * 4 for v in snapshot(ctx.llm, trainable_names(ctx.llm, cfg.fed)).values())},
    }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6, help="measured training steps per configuration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/perf.json")
    args = p.parse_args(argv)
    peak = {"fp32": peak_matmul_flops(torch.float32), "bf16": peak_matmul_flops(torch.bfloat16)}
    with tempfile.TemporaryDirectory() as tmp:
        models = prepare_models(Path(tmp), args.seed)
        train = {k: run_isolated(k, d, only, args.steps, args.seed) for k, (d, only) in models.items()}
    server = server_costs(args.seed)
    ot = train["offsite-tuning"]
    server["bytes_per_client_per_round"]["offsite-tuning (adapter, dense fp32)"] = {
        "up": ot["update_bytes"], "down": ot["update_bytes"]}
    result = {"seed": args.seed, "steps": args.steps, "threads": torch.get_num_threads(), "peak_matmul_flops": peak,
              "training": train, "server": server}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    full = train["full-llm"]
    peak_used = peak["bf16"] if full["bf16_autocast"] else peak["fp32"]
    print(f"peak matmul: fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s "
          f"(training uses {'bf16 autocast' if full['bf16_autocast'] else 'fp32'})")
    print("| client training | tokens/s | x full LLM | peak RSS MB | x full LLM | achieved / peak FLOP/s |")
    print("|---|---|---|---|---|---|")
    for k, r in train.items():
        print(f"| {k} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / full['tokens_per_s']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / full['peak_rss_mb']:.2f} | "
              f"{r['train_flops_per_s'] / peak_used:.2f} |")
    print("| bytes per client per round | up MB | down MB |")
    print("|---|---|---|")
    for k, r in server["bytes_per_client_per_round"].items():
        print(f"| {k} | {r['up'] / 2**20:.1f} | {r['down'] / 2**20:.1f} |")
    print(f"server: compress {server['compress_seconds']:.1f} s, aggregate fedavg/ties/fedproxy "
          f"{server['aggregate_fedavg_seconds']:.2f}/{server['aggregate_ties_seconds']:.2f}/"
          f"{server['aggregate_fedproxy_seconds']:.2f} s (4 clients), fuse {server['fuse_seconds']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
