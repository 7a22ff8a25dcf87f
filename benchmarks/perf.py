"""Client and server costs of FedProxy vs full-LLM fine-tuning vs Offsite-Tuning, in one run.

Usage (the table in README.md and docs/results.md; the summary in benchmarks/results/perf.json):
    python benchmarks/perf.py --steps 6 --flower-clients 2 --out runs/perf.json --results benchmarks/results/perf.json
    python benchmarks/perf.py --parts distill --distill-models smollm2 gemma3-270m   # one part only
    python benchmarks/perf.py --parts default-run --out runs/perf/default_run.json  # the README's end-to-end times
    python benchmarks/perf.py --steps 6 --set bf16=true --out runs/perf_bf16.json   # bf16 autocast
    python benchmarks/perf.py --flower-only --flower-clients 2 --out runs/perf_flower.json
    # the Flower rounds as before the float16 wire and the in-memory SuperLink (docs/results.md):
    python benchmarks/perf.py --flower-only --flower-clients 2 --flower-set fed.wire_dtype=float32 \
        --superlink-sqlite --out runs/perf_flower_before.json

Every training configuration runs in its own fresh process, so each peak RSS is its own.
Clients train on packed rows (``fed.pack``, the default); the full LLM and the proxy are
also run on right-padded batches, to print what packing gains.
Achieved FLOP/s uses an analytic count of matmul FLOPs per training step (forward through
all blocks, activation gradients down to the lowest trainable block, weight gradients of
trainable blocks; LM head only at label positions, as in training) and is compared with
the machine's peak matmul FLOP/s measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
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


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not getrusage's ru_maxrss: Linux carries that
    over from the parent through fork and exec, so a worker spawned by a parent that had loaded a
    larger model (the distillation part) reported the parent's peak."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024


def pin_mmap_threshold(nbytes: int = 128 * 1024) -> bool:
    """Make glibc serve every allocation of ``nbytes`` or more with its own mmap (mallopt
    M_MMAP_THRESHOLD), so freed tensors go back to the OS at once; True where it took effect.

    By default glibc raises the threshold to the size of each large block freed (up to 32 MiB),
    and later blocks come from heaps that keep freed pages. Pinning it cut a client's peak RSS
    by 8-9% but its speed by 30% (every step's activations then page-fault in fresh), so
    fedproxy leaves the allocator alone; benchmarks/diagnostics/allocator.py measures both.
    """
    import ctypes

    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, int(nbytes)))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        return False


def _train_worker(kind: str, model_dir: str, blocks_only: list[int] | None, steps: int, seed: int, batch: int,
                  pack: bool, overrides: list[str], queue, pin_malloc: bool = False) -> None:
    """Load only what a client would hold (the model in ``model_dir``) and time training steps.

    ``pin_malloc`` pins glibc's mmap threshold (:func:`pin_mmap_threshold`; not what fedproxy
    does, see benchmarks/diagnostics/allocator.py).
    """
    import dataclasses
    import itertools
    import random

    from fedproxy.config import RunConfig
    from fedproxy.data import load_benchmark
    from fedproxy.data.encode import Encoder, infinite_batches
    from fedproxy.federated import local_train, trainable_names
    from fedproxy.modeling import bf16_supported, blocks, load_pretrained, pick_device, snapshot
    from fedproxy.objectives import padding_fraction

    pinned = pin_malloc and pin_mmap_threshold()
    cfg = RunConfig().with_overrides(overrides)
    baseline_rss = _rss_mb()  # the Python + torch + transformers runtime, before any model
    model, tok = load_pretrained(model_dir)
    device = pick_device(cfg.device)
    model.to(device)
    bf16 = cfg.bf16 and bf16_supported(device)
    bench = load_benchmark(cfg.data, seed)
    encoder = Encoder(tok, bench, cfg.data.max_length)
    fed = dataclasses.replace(cfg.fed, local_steps=steps, batch_size=batch, pack=pack)
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
    # the same batches again, to count what the model processed including padding
    stream = infinite_batches(bench.train[0], batch, random.Random(seed))
    padding = padding_fraction(encoder, itertools.islice(stream, steps), packed=pack)
    queue.put({"kind": kind, "batch_size": batch, "tokens_per_s": tokens_per_s,
               "train_flops_per_s": tokens_per_s * flops_per_token,
               "processed_flops_per_s": tokens_per_s / (1 - padding) * flops_per_token,
               "padding_fraction": padding, "packed": pack,
               "trainable_params": sum(v.numel() for v in res.update.values()),
               "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
               "trained_bytes": sum(v.numel() * v.element_size() for v in res.update.values()),
               "update_shapes": [list(v.shape) for v in res.update.values()],
               "peak_rss_mb": _peak_rss_mb(),
               "runtime_rss_mb": baseline_rss, "bf16_autocast": bf16, "mmap_threshold_pinned": pinned})


def prepare_models(workdir: Path, seed: int) -> dict[str, tuple[str, list[int] | None]]:
    """Save the proxy and the OT adapter+emulator to disk so each client process loads only those."""
    from fedproxy.compress.emulator import adapter_size, ot_keep
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
    out["proxy-lora"] = out["proxy"]  # the same proxy, trained as the paper's clients train it (KIND_SETS)
    return out


# Per-kind config overrides: the paper's LoRA clients (r = 32, alpha = 64) on the proxy.
KIND_SETS = {"proxy-lora": ["fed.lora_r=32"]}


def run_isolated(kind: str, model_dir: str, blocks_only, steps: int, seed: int, batch: int, pack: bool = True,
                 overrides: list[str] = (), pin_malloc: bool = False) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_train_worker, args=(kind, model_dir, blocks_only, steps, seed, batch, pack,
                                                list(overrides), q, pin_malloc))
    p.start()
    out = q.get()
    p.join()
    return out


def combine_runs(runs: list[dict]) -> dict:
    """One configuration's repeated processes: median speed and FLOP/s, the largest peak RSS,
    and each process's own figures under ``runs``."""
    out = dict(runs[0])
    for k in ("tokens_per_s", "train_flops_per_s", "processed_flops_per_s", "runtime_rss_mb"):
        out[k] = statistics.median(r[k] for r in runs)
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    out["runs"] = [{k: r[k] for k in ("tokens_per_s", "peak_rss_mb", "runtime_rss_mb")} for r in runs]
    return out


def median_figures(runs: list[dict]) -> dict[str, float]:
    """Median tokens/s, peak RSS and runtime RSS over processes of one configuration."""
    return {k: statistics.median(r[k] for r in runs) for k in ("tokens_per_s", "peak_rss_mb", "runtime_rss_mb")}


def memory_floor(full: dict, proxy: dict) -> dict:
    """What an equal training recipe allows the proxy/full-LLM peak-RSS ratio to be.

    A client's peak is about runtime + frozen weights + k x the trained tensors (the weights
    themselves, the round's starting point, two AdamW moments, gradients or activations).
    ``k`` is fitted on the full LLM and applied to the proxy. At keep ratio 0.5 the trained
    part halves but the runtime and the frozen tied embedding, which both clients hold, do
    not: the ratio stays above 0.5 for every k.
    """
    def fixed(r):
        return r["runtime_rss_mb"] + (r["param_bytes"] - r["trained_bytes"]) / 2**20

    copies = (full["peak_rss_mb"] - fixed(full)) / (full["trained_bytes"] / 2**20)
    predicted = fixed(proxy) + copies * proxy["trained_bytes"] / 2**20
    return {"copies": copies, "fixed_mb": fixed(proxy), "proxy_mb": predicted,
            "ratio": predicted / full["peak_rss_mb"]}


def lora_factors(model, r: int) -> dict[str, torch.Tensor]:
    """Shape-only (meta) tensors like the LoRA factors a client sends: A is r x in, B is out x r."""
    from fedproxy.federated.lora import LORA_TARGETS

    out = {}
    for name, mod in model.named_modules():
        if name.split(".")[-1] in LORA_TARGETS and isinstance(mod, torch.nn.Linear):
            out[f"{name}.lora_A"] = torch.empty(r, mod.in_features, device="meta")
            out[f"{name}.lora_B"] = torch.empty(mod.out_features, r, device="meta")
    return out


def wire_bytes(up: dict, down: dict) -> dict:
    """Bytes up and down on each ``fed.wire_dtype``."""
    from fedproxy.config import WIRE_DTYPES
    from fedproxy.federated.wire import nbytes

    return {w: {"up": nbytes(up, w), "down": nbytes(down, w)} for w in WIRE_DTYPES}


def server_costs(seed: int, overrides: list[str] = ()) -> dict:
    from fedproxy.aggregate import AGGREGATORS, AggOptions
    from fedproxy.compress import compress
    from fedproxy.config import RunConfig
    from fedproxy.context import build_context
    from fedproxy.federated import trainable_names
    from fedproxy.fuse import fuse_state
    from fedproxy.modeling import snapshot

    cfg = RunConfig().with_overrides(list(overrides))
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
    for agg in ("fedavg", "ties", "agreement", "h-ties"):
        t0 = time.perf_counter()
        merged = AGGREGATORS.get(agg)(deltas, [1, 1, 1, 1], AggOptions(density=0.2), {})
        out[f"aggregate_{agg}_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fuse_state(snapshot(ctx.llm), merged, comp.pmap)
    out["fuse_seconds"] = time.perf_counter() - t0
    out["bytes_per_client_per_round"] = {
        "fedproxy (full proxy blocks)": wire_bytes(base, base),
        "fedproxy (LoRA r=8 on proxy)": wire_bytes(lora_factors(comp.proxy, 8), base),
        "fedavg-lora (LoRA r=8 on full LLM)": wire_bytes(lora_factors(ctx.llm, 8),
                                                         snapshot(ctx.llm, trainable_names(ctx.llm, cfg.fed))),
    }
    return out


# The distillation recipes compared: full-vocabulary KL at every position (the default), KL at a
# sampled quarter of the positions, and the final normed state matched (no LM head at all).
DISTILL_RECIPES = {"logits": {}, "logits, 1/4 positions": {"kl_positions": 0.25},
                   "final-hidden": {"distill_target": "final-hidden"}}


def distill_costs(source: str, seed: int, steps: int, workdir: Path) -> dict:
    """Seconds per distillation step and the proxy's held-out perplexity ratio to the LLM for each of
    :data:`DISTILL_RECIPES`, ``steps`` steps each on the same server text (the default config's;
    model ``source``).

    A step's time is (compress with ``steps`` steps - compress without distillation) / ``steps``, so
    block selection is not counted. ``head_share``: the share of a full-KL step that matching the
    final state instead saves, i.e. what the vocabulary costs.
    """
    import dataclasses

    from fedproxy.compress import compress
    from fedproxy.config import RunConfig
    from fedproxy.context import build_context
    from fedproxy.eval import perplexity

    cfg = RunConfig().with_overrides([f"seed={seed}", f"model.source={source}"])
    ctx = build_context(cfg, workdir / source, progress=False)
    heldout = ctx.heldout_split()[1]
    text = ctx.server_text_batches(cfg.compress.distill_batch)
    llm_ppl = perplexity(ctx.llm, ctx.encoder, heldout, ctx.device)

    def timed(**changes) -> tuple[float, object]:
        t0 = time.perf_counter()
        res = compress(ctx.llm, text, dataclasses.replace(cfg.compress, **changes), ctx.device, seed, ctx.bf16,
                       progress=False)
        return time.perf_counter() - t0, res

    select_s, _ = timed(distill_steps=0)
    rows = {}
    for name, changes in DISTILL_RECIPES.items():
        seconds, res = timed(distill_steps=steps, **changes)
        rows[name] = {"step_s": (seconds - select_s) / steps,
                      "ppl_ratio": perplexity(res.proxy, ctx.encoder, heldout, ctx.device) / llm_ppl}
    full = rows["logits"]
    return {"model": source, "vocab": int(ctx.llm.config.vocab_size), "blocks": int(ctx.llm.config.num_hidden_layers),
            "hidden": int(ctx.llm.config.hidden_size), "steps": steps, "select_s": select_s, "llm_ppl": llm_ppl,
            "recipes": rows, "head_share": 1 - rows["final-hidden"]["step_s"] / full["step_s"],
            "ppl_ratio_over_full_kl": {k: r["ppl_ratio"] / full["ppl_ratio"] for k, r in rows.items()},
            "step_over_full_kl": {k: r["step_s"] / full["step_s"] for k, r in rows.items()}}


def flower_overhead(workdir: Path, seed: int, clients: int, extra: list[str] = (), sqlite: bool = False,
                    floor: bool = False) -> dict:
    """Seconds per round (default client settings, ``clients`` clients) in-process, in the
    Simulation Engine and in the Deployment Engine on loopback, with the same saved proxy.

    Two rounds each: the first pays one-off costs (shipping the frozen tensors to nodes that
    lack them, Ray's worker start), so the per-round figures are the second round's and the
    first round is reported beside them. ``extra`` config overrides apply to all three paths;
    ``sqlite`` keeps the loopback SuperLink's state in an SQLite file (for before/after runs).
    ``floor``: on the same SuperNodes, also Flower's floor (:func:`flower_floor`)."""
    from fedproxy import checkpoint
    from fedproxy.compress import build_proxy, save_proxy
    from fedproxy.compress.base import ProxyMap
    from fedproxy.compress.uniform import uniform_keep
    from fedproxy.config import RunConfig
    from fedproxy.context import build_context
    from fedproxy.federated import run_federation, trainable_names
    from fedproxy.flower_app import simulate
    from fedproxy.loopback import Loopback
    from fedproxy.modeling import blocks, snapshot

    total = RunConfig().data.num_clients
    overrides = [f"seed={seed}", "fed.rounds=2", f"fed.fraction={clients / total}", *extra]  # ``clients`` train
    cfg = RunConfig().with_overrides(overrides)
    ctx = build_context(cfg, workdir / "ctx", progress=False)
    n = len(blocks(ctx.llm))
    keep = uniform_keep(n, round(cfg.compress.keep_ratio * n))
    proxy_dir = save_proxy(build_proxy(ctx.llm, keep), ProxyMap(n, keep, ctx.llm.config.model_type, "uniform"),
                           workdir / "proxy", ctx.tokenizer)
    cfg = cfg.with_overrides([f"compress.proxy_dir={proxy_dir}"])
    out = {}
    proxy = build_proxy(ctx.llm, keep)
    names = trainable_names(proxy, cfg.fed)
    server = run_federation(proxy, snapshot(proxy, names), ctx.bench.train, ctx.encoder, cfg.fed, ctx.device, seed,
                            ctx.bf16, progress=False)
    histories = {"in-process": server.history}
    server = simulate(cfg, build_proxy(ctx.llm, keep), ctx.tokenizer, total, workdir / "sim")
    histories["simulation"] = server.history
    root = Path(__file__).resolve().parents[1]
    # SuperNodes here share this machine's cores: split them between the ``clients`` that train at
    # once, as one would configure co-located nodes (see fedproxy.flower_app.node_threads).
    threads = max(1, (os.cpu_count() or 1) // clients)
    nodes = [f"partition-id={i} num-partitions={total} threads={threads}" for i in range(total)]
    flat = ";".join(f"{k}={v}" for k, v in [o.split("=", 1) for o in overrides] + [("compress.proxy_dir",
                                                                                     str(proxy_dir))])
    with Loopback(workdir / "deploy", nodes, database=workdir / "state.db" if sqlite else None) as lb:
        lb.run(root, f'fedproxy-config="default" out-dir="{workdir / "deploy_out"}" overrides="{flat}"', timeout=900)
        # the update a client sends and receives each round, on the configured wire
        payload = sum(v.numel() for v in snapshot(proxy, names).values()) * (2 if cfg.fed.wire_dtype == "float16"
                                                                             else 4)
        floors = flower_floor(lb, root / "benchmarks" / "flower_floor", workdir, clients, payload) if floor else None
    histories["deployment"] = checkpoint.load(workdir / "deploy_out" / "flower_server.pt")["history"]
    out = {k: h[1]["round_seconds"] for k, h in histories.items()}
    first = {k: h[0]["round_seconds"] for k, h in histories.items()}
    return {"clients": clients, "round_seconds": out, "first_round_seconds": first,
            "overhead": {k: out[k] / out["in-process"] - 1 for k in ("simulation", "deployment")},
            "first_round_overhead": {k: first[k] / first["in-process"] - 1 for k in ("simulation", "deployment")},
            "breakdown": {k: round_breakdown(h[1]) for k, h in histories.items()},
            "first_round_breakdown": {k: round_breakdown(h[0]) for k, h in histories.items()},
            **({"floor": floor_summary(floors, out["deployment"], round_breakdown(histories["deployment"][1]))}
               if floors else {})}


def flower_floor(lb, app: Path, workdir: Path, clients: int, payload: int, rounds: int = 3) -> dict:
    """Deployment rounds of the floor app (benchmarks/flower_floor) on ``lb``'s SuperNodes: ``clients``
    nodes each receive and send ``payload`` bytes and train nothing, once with Flower's imports only
    and once importing fedproxy's ClientApp module first."""
    out = {}
    for label, ours in (("flower", False), ("flower + our imports", True)):
        path = workdir / f"floor-{'ours' if ours else 'bare'}.json"
        lb.run(app, f'rounds={rounds} clients={clients} payload-bytes={payload} our-imports={str(ours).lower()} '
                    f'out-file="{path}"', timeout=900)
        out[label] = json.loads(path.read_text())
    return out


def floor_summary(floors: dict, ours_round: float, ours: dict) -> dict:
    """Our Deployment round against Flower's floor with our imports (rounds after the first, which
    installs the app): ``overhead_over_floor`` = (our round - our slowest client's training) / floor - 1,
    and what the floor is made of."""
    def later(run, key=None):
        rs = run["rounds"][1:] or run["rounds"]
        if key is None:
            return statistics.mean(r["round_seconds"] for r in rs)
        return statistics.mean(m[key] for r in rs for m in r["client_metrics"])

    bare, floor = floors["flower"], floors["flower + our imports"]
    floor_s = later(floor)
    return {"payload_bytes": floor["payload_bytes"], "nodes": floor["nodes"], "floor_round_s": floor_s,
            "bare_flower_round_s": later(bare), "first_round_s": floor["rounds"][0]["round_seconds"],
            "our_imports_s": later(floor, "import_seconds"), "queue_s": later(floor, "queue_seconds"),
            "bare_queue_s": later(bare, "queue_seconds"), "ours_round_s": ours_round,
            "ours_train_max_s": ours["train_max"],
            "overhead_over_floor": (ours_round - ours["train_max"]) / floor_s - 1}


def round_breakdown(rec: dict) -> dict:
    """Where one round's seconds went, from the server's round record and its clients' metrics.

    Flower clients report ``queue_seconds`` (server creates the message -> handler starts: transport,
    ClientApp process start, imports), ``unpack_seconds`` (arrays -> tensors, frozen tensors),
    ``setup_seconds`` (model, data and tokenizer built) and ``handler_seconds`` (the whole handler,
    training and packing the reply included); the rest of the round (``after_clients``) is the
    replies' way back, unpacking and aggregation.
    """
    ms = list(rec["client_metrics"].values())
    train = [m["train_seconds"] for m in ms]
    out = {"round": rec["round_seconds"], "train_sum": sum(train), "train_max": max(train)}
    if all("handler_seconds" in m for m in ms):
        out["queue_max"] = max(m["queue_seconds"] for m in ms)
        out["handler_setup_mean"] = statistics.mean(m["handler_seconds"] - m["train_seconds"] for m in ms)
        if all("unpack_seconds" in m for m in ms):  # clients older than these metrics do not send them
            out["unpack_mean"] = statistics.mean(m["unpack_seconds"] for m in ms)
            out["setup_mean"] = statistics.mean(m["setup_seconds"] for m in ms)
        out["after_clients"] = rec["round_seconds"] - max(m["queue_seconds"] + m["handler_seconds"] for m in ms)
    return out


def _measure_flower(workdir: Path, seed: int, clients: int, extra: list[str] = (), sqlite: bool = False,
                    floor: bool = False) -> dict:
    from fedproxy.errors import FedProxyError

    try:
        return flower_overhead(workdir, seed, clients, extra, sqlite, floor)
    except FedProxyError as err:  # keep the other measurements; say why this one is missing
        return {"error": str(err)[:2000]}


def _flower_line(flower: dict) -> str:
    if "error" in flower:
        return f"Flower overhead: not measured ({flower['error'].splitlines()[0]})"
    rs, fs = flower["round_seconds"], flower["first_round_seconds"]
    return (f"second round, {flower['clients']} clients: in-process {rs['in-process']:.1f} s, Simulation Engine "
            f"{rs['simulation']:.1f} s ({flower['overhead']['simulation']:+.0%}), Deployment Engine on loopback "
            f"{rs['deployment']:.1f} s ({flower['overhead']['deployment']:+.0%}); first round "
            f"{fs['in-process']:.1f} / {fs['simulation']:.1f} ({flower['first_round_overhead']['simulation']:+.0%}) / "
            f"{fs['deployment']:.1f} s ({flower['first_round_overhead']['deployment']:+.0%})\n"
            + _breakdown_table(flower["breakdown"]))


def _breakdown_table(breakdown: dict) -> str:
    rows = ["| second round, s | round | client training, sum / max | before the handler, max "
            "| handler outside training, mean (unpack / build client) | after the last client |",
            "|---|---|---|---|---|---|"]
    for k, b in breakdown.items():
        split = f" ({b['unpack_mean']:.1f} / {b['setup_mean']:.1f})" if "unpack_mean" in b else ""
        extra = (f"{b['queue_max']:.1f} | {b['handler_setup_mean']:.1f}{split} | {b['after_clients']:.1f}"
                 if "queue_max" in b else f"- | - | {b['round'] - b['train_sum']:.1f}")
        rows.append(f"| {k} | {b['round']:.1f} | {b['train_sum']:.1f} / {b['train_max']:.1f} | {extra} |")
    return "\n".join(rows)


PARTS = ("train", "flower", "server", "distill", "default-run")


def default_run(model: str, out: Path, resume: bool) -> dict:
    """`fedproxy run` with the default config on ``model``, in a fresh process: its end-to-end time
    (loading, every method, the report), its peak memory, and each method's own time and score,
    from its report."""
    peak_file = out.parent / f"{out.name}.peak_rss_mb"
    # The child reads its own VmHWM as it exits: getrusage would carry the parent's peak through
    # exec (see _peak_rss_mb).
    code = ("import sys; from fedproxy.cli import main; rc = main(sys.argv[1:]); "
            "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')); "
            f"open({str(peak_file)!r}, 'w').write(str(int(hwm.split()[1]) / 1024)); raise SystemExit(rc)")
    cmd = [sys.executable, "-c", code, "run", "--quiet", "--out", str(out), "--set", f"model.source={model}",
           *(["--resume"] if resume else [])]
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"the default run on {model} failed; its log is above, and --resume continues it")
    seconds = time.perf_counter() - t0
    peak = float(peak_file.read_text())
    report = json.loads((out / "report.json").read_text())
    methods = report["methods"]
    return {"seconds": seconds, "peak_rss_mb": peak, "resumed": resume,
            "report": str(out / "report.json"),
            "method_seconds": {m: r["wall_seconds"] for m, r in methods.items()},
            "scores": {m: r.get("score") for m, r in methods.items()},
            "fedproxy_shipped": methods.get("fedproxy", {}).get("fusion", {}).get("decision", {}).get("shipped")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS[:4]),
                   help="what to measure: client training (full LLM, proxy, proxy with LoRA r=32, "
                        "Offsite-Tuning), Flower rounds and Flower's floor, server costs, distillation, "
                        "the default `fedproxy run` end to end per model (not in the default set: about an hour)")
    p.add_argument("--steps", type=int, default=6, help="measured training steps per configuration")
    p.add_argument("--repeats", type=int, default=2,
                   help="fresh processes per client configuration (median speed, largest peak RSS): single "
                        "processes of one configuration differed by up to 20%% here (full LLM 162-198 tokens/s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/perf.json")
    p.add_argument("--results", default=None, metavar="PATH",
                   help="also write the summary (benchmarks/results/perf.json: distill_step_s, head_share, "
                        "fidelity_ppl_ratio, lora_vs_full_llm_tokens_per_s, deployment_overhead_over_floor)")
    p.add_argument("--summary-from", nargs="+", default=None, metavar="RESULT",
                   help="measure nothing: write --results from saved --out files, a later file's parts "
                        "replacing an earlier one's (e.g. a part measured again)")
    p.add_argument("--batch-sizes", type=int, nargs="*", default=[32],
                   help="extra proxy batch sizes to measure FLOP/s at (the default batch is always measured)")
    p.add_argument("--flower-clients", type=int, default=4, help="clients in the Flower overhead rounds (0 = skip)")
    p.add_argument("--flower-only", action="store_true", help="measure only the Flower rounds (--parts flower)")
    p.add_argument("--no-floor", action="store_true", help="skip Flower's floor (benchmarks/flower_floor)")
    p.add_argument("--distill-models", nargs="*", default=["smollm2", "gemma3-270m"],
                   help="model sources whose distillation step and fidelity are measured")
    p.add_argument("--run-models", nargs="*", default=["smollm2", "gemma3-270m"],
                   help="model sources of the default-run part")
    p.add_argument("--run-out", default="runs/perf/default", metavar="DIR",
                   help="the default-run part's run folders (DIR-<model>); --resume continues them")
    p.add_argument("--resume", action="store_true", help="continue the default-run part's interrupted runs")
    p.add_argument("--distill-steps", type=int, default=40, help="distillation steps per recipe (the default's)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="config overrides for every measurement, e.g. bf16=true (bf16 autocast where the CPU "
                        "has it; off by default)")
    p.add_argument("--flower-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for the Flower rounds only, e.g. fed.wire_dtype=float32")
    p.add_argument("--superlink-sqlite", action="store_true",
                   help="keep the loopback SuperLink's state in an SQLite file instead of memory")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.steps < 1 or args.distill_steps < 1:
        p.error("--repeats, --steps and --distill-steps must be at least 1")
    args.flower_set = [*args.overrides, *args.flower_set]
    if args.summary_from:
        if not args.results:
            p.error("--summary-from needs --results (where the summary goes)")
        result, sources = {}, []
        for path in args.summary_from:
            saved = json.loads(Path(path).read_text())
            sources.append({"file": path, "command": saved.get("command", "not recorded"),
                            "parts": saved.get("parts", [])})
            result.update(saved)
        print_report(result)
        write_summary({**result, "sources": sources}, args.results, argv)
        return 0
    parts = ["flower"] if args.flower_only else args.parts
    result = {"command": f"python benchmarks/perf.py {' '.join(argv or sys.argv[1:])}",
              "seed": args.seed, "steps": args.steps, "overrides": args.overrides,
              "threads": torch.get_num_threads(), "parts": parts}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every part, so a failure later keeps what was measured
        out.write_text(json.dumps(result, indent=2))

    with tempfile.TemporaryDirectory() as tmp:
        if "distill" in parts:
            result["distillation"] = {}
            for m in args.distill_models:
                result["distillation"][m] = distill_costs(m, args.seed, args.distill_steps, Path(tmp))
                save()
        if "train" in parts:
            result.update(training_costs(args, Path(tmp)))
            save()
        if "flower" in parts and args.flower_clients:
            result["flower"] = _measure_flower(Path(tmp), args.seed, args.flower_clients, args.flower_set,
                                               args.superlink_sqlite, floor=not args.no_floor)
            result["flower_set"], result["superlink_sqlite"] = args.flower_set, args.superlink_sqlite
            save()
    if "default-run" in parts:
        result["default_run"] = {}
        for m in args.run_models:
            result["default_run"][m] = default_run(m, Path(f"{args.run_out}-{m}"), args.resume)
            save()
    if "server" in parts:
        result["server"] = server_costs(args.seed, args.overrides)
        if "training" in result:
            ot = result["training"]["offsite-tuning"]
            adapter = {str(i): torch.empty(shape, device="meta") for i, shape in enumerate(ot["update_shapes"])}
            result["server"]["bytes_per_client_per_round"]["offsite-tuning (adapter)"] = wire_bytes(adapter, adapter)
    save()
    print_report(result)
    if args.results:
        write_summary(result, args.results, argv)
    return 0


def write_summary(result: dict, path: str, argv: list[str] | None) -> None:
    summary = headline_summary(result, f"python benchmarks/perf.py {' '.join(argv or sys.argv[1:])}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary written to {path}")


def training_costs(args, tmp: Path) -> dict:
    """Client training of every configuration in fresh processes, in turns; packed and padded rows."""
    from fedproxy.config import RunConfig

    batch = RunConfig().with_overrides(args.overrides).fed.batch_size
    peak = {"fp32": peak_matmul_flops(torch.float32), "bf16": peak_matmul_flops(torch.bfloat16)}
    models = prepare_models(tmp, args.seed)
    sets = args.overrides
    runs: dict[str, list[dict]] = {k: [] for k in models}
    for _ in range(args.repeats):  # in turns, so drift on a shared machine hits every configuration
        for k, (d, only) in models.items():
            runs[k].append(run_isolated(k, d, only, args.steps, args.seed, batch,
                                        overrides=[*sets, *KIND_SETS.get(k, [])]))
    train = {k: combine_runs(v) for k, v in runs.items()}
    d, only = models["proxy"]
    sweep = {b: run_isolated("proxy", d, only, args.steps, args.seed, b, overrides=sets) for b in args.batch_sizes}
    # the same clients on right-padded batches (fed.pack=false), what packing gains
    padded = {k: run_isolated(k, *models[k], args.steps, args.seed, batch, pack=False, overrides=sets)
              for k in ("full-llm", "proxy")}
    return {"batch": batch, "peak_matmul_flops": peak, "training": train, "padded_training": padded,
            "proxy_batch_sweep": sweep, "memory_floor": memory_floor(train["full-llm"], train["proxy"])}


def headline_summary(result: dict, command: str) -> dict:
    """The ratios issue #24 asks for, from one run's ``result`` (benchmarks/results/perf.json)."""
    out = {"command": command, "seed": result["seed"], "threads": result["threads"],
           **({"sources": result["sources"]} if "sources" in result else {})}
    if "distillation" in result:
        d = result["distillation"]
        out["distill_step_s"] = {m: {k: r["step_s"] for k, r in x["recipes"].items()} for m, x in d.items()}
        out["head_share"] = {m: x["head_share"] for m, x in d.items()}
        out["fidelity_ppl_ratio"] = {m: {k: r["ppl_ratio"] for k, r in x["recipes"].items()} for m, x in d.items()}
        out["fidelity_vs_full_kl"] = {m: x["ppl_ratio_over_full_kl"] for m, x in d.items()}
        out["step_vs_full_kl"] = {m: x["step_over_full_kl"] for m, x in d.items()}
    if "training" in result:
        t = result["training"]
        out["lora_vs_full_llm_tokens_per_s"] = t["proxy-lora"]["tokens_per_s"] / t["full-llm"]["tokens_per_s"]
        out["lora_upload_vs_full_proxy"] = t["proxy-lora"]["trained_bytes"] / t["proxy"]["trained_bytes"]
        out["peak_rss_mb"] = {k: r["peak_rss_mb"] for k, r in t.items()}
        out["lora_peak_rss_vs_full_llm"] = t["proxy-lora"]["peak_rss_mb"] / t["full-llm"]["peak_rss_mb"]
        out["proxy_vs_full_llm_tokens_per_s"] = t["proxy"]["tokens_per_s"] / t["full-llm"]["tokens_per_s"]
    if "default_run" in result:
        out["default_run_s"] = {m: r["seconds"] for m, r in result["default_run"].items()}
        out["default_run_method_s"] = {m: r["method_seconds"] for m, r in result["default_run"].items()}
        out["default_run_peak_rss_mb"] = {m: r.get("peak_rss_mb") for m, r in result["default_run"].items()}
    floor = (result.get("flower") or {}).get("floor")
    if floor:
        out["deployment_overhead_over_floor"] = floor["overhead_over_floor"]
        out["flower_floor"] = {k: floor[k] for k in ("floor_round_s", "bare_flower_round_s", "first_round_s",
                                                     "our_imports_s", "queue_s", "bare_queue_s", "ours_round_s",
                                                     "ours_train_max_s", "payload_bytes", "nodes")}
    return out


def print_report(result: dict) -> None:
    if "distillation" in result:
        print("| distillation | vocabulary | recipe | s per step | x full KL | proxy / LLM perplexity | x full KL |")
        print("|---|---|---|---|---|---|---|")
        for m, x in result["distillation"].items():
            for k, r in x["recipes"].items():
                print(f"| {m} ({x['blocks']} blocks, width {x['hidden']}) | {x['vocab']:,} | {k} | {r['step_s']:.2f} | "
                      f"{x['step_over_full_kl'][k]:.2f} | {r['ppl_ratio']:.2f} | {x['ppl_ratio_over_full_kl'][k]:.3f} |")
            print(f"({m}: the vocabulary's share of a full-KL step, what the final-state recipe saves: "
                  f"{x['head_share']:.0%})")
    if "training" in result:
        print_training(result)
    flower = result.get("flower")
    if flower:
        print(_flower_line(flower))
        if "floor" in flower:
            f = flower["floor"]
            print(f"Flower's floor ({f['nodes']} nodes, {f['payload_bytes'] / 2**20:.1f} MB each way, rounds after "
                  f"the first): {f['bare_flower_round_s']:.1f} s with Flower's imports only, {f['floor_round_s']:.1f} s "
                  f"importing our ClientApp module ({f['our_imports_s']:.1f} s of imports per ClientApp; "
                  f"{f['queue_s']:.1f} s from message to handler); first round {f['first_round_s']:.1f} s (app "
                  f"install); ours {f['ours_round_s']:.1f} s of which training {f['ours_train_max_s']:.1f} s: "
                  f"overhead over the floor {f['overhead_over_floor']:+.0%}")
    if "default_run" in result:
        runs = result["default_run"]
        print("| default run (`fedproxy run --set model.source=M`) | end to end min | peak RSS GB | "
              + " | ".join(f"{m} min" for m in next(iter(runs.values()))["method_seconds"]) + " |")
        for m, r in runs.items():
            minutes = " | ".join(f"{s / 60:.1f}" for s in r["method_seconds"].values())
            peak = f"{r['peak_rss_mb'] / 1024:.1f}" if "peak_rss_mb" in r else "not recorded"
            print(f"| {m} | {r['seconds'] / 60:.1f} | {peak} | {minutes} |" + (" (resumed)" if r["resumed"] else ""))
    if "server" in result:
        server = result["server"]
        print("| bytes per client per round | up MB, float16 wire (default) | down MB | up MB, float32 wire | down MB |")
        print("|---|---|---|---|---|")
        for k, r in server["bytes_per_client_per_round"].items():
            print(f"| {k} | " + " | ".join(f"{r[w][d] / 2**20:.1f}" for w in ("float16", "float32")
                                           for d in ("up", "down")) + " |")
        print(f"server: compress {server['compress_seconds']:.1f} s, aggregate fedavg/ties/agreement/h-ties "
              f"{server['aggregate_fedavg_seconds']:.2f}/{server['aggregate_ties_seconds']:.2f}/"
              f"{server['aggregate_agreement_seconds']:.2f}/{server['aggregate_h-ties_seconds']:.2f} s (4 clients), "
              f"fuse {server['fuse_seconds']:.2f} s")


def print_training(result: dict) -> None:
    train, padded, sweep, peak, batch = (result[k] for k in ("training", "padded_training", "proxy_batch_sweep",
                                                              "peak_matmul_flops", "batch"))
    full = train["full-llm"]
    peak_used = peak["bf16"] if full["bf16_autocast"] else peak["fp32"]
    print(f"peak matmul: fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s "
          f"(training uses {'bf16 autocast' if full['bf16_autocast'] else 'fp32'})")
    print(f"| client training (batch {batch}) | tokens/s | x full LLM | peak RSS MB | x full LLM "
          "| RSS above runtime MB | x full LLM | MB up | x full proxy | useful / peak FLOP/s | processed / peak FLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")

    def model_rss(r):
        return r["peak_rss_mb"] - r["runtime_rss_mb"]

    for k, r in train.items():
        print(f"| {k} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / full['tokens_per_s']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / full['peak_rss_mb']:.2f} | "
              f"{model_rss(r):.0f} | {model_rss(r) / model_rss(full):.2f} | {r['trained_bytes'] / 2**20:.1f} | "
              f"{r['trained_bytes'] / train['proxy']['trained_bytes']:.3f} | "
              f"{r['train_flops_per_s'] / peak_used:.2f} | {r['processed_flops_per_s'] / peak_used:.2f} |")
    print(f"({len(full['runs'])} processes each, tokens/s per process: "
          + "; ".join(f"{k} " + ", ".join(f"{r['tokens_per_s']:.0f}" for r in train[k]["runs"]) for k in train) + ")")
    floor = result["memory_floor"]
    print(f"equal-recipe memory: runtime + frozen weights {floor['fixed_mb']:.0f} MB + {floor['copies']:.1f} copies "
          f"of the trained tensors (fitted on the full LLM) predict the proxy at {floor['proxy_mb']:.0f} MB, "
          f"{floor['ratio']:.2f} of the full LLM (measured "
          f"{train['proxy']['peak_rss_mb'] / full['peak_rss_mb']:.2f}); above 0.5 for any number of copies")
    print(f"(packed rows; runtime RSS before loading a model: {full['runtime_rss_mb']:.0f} MB; padding "
          f"{train['proxy']['padding_fraction']:.0%} of processed tokens at batch {batch})")
    print("packed vs right-padded batches (padding " + f"{padded['proxy']['padding_fraction']:.0%}), tokens/s: "
          + ", ".join(f"{k} {padded[k]['tokens_per_s']:.0f} -> {train[k]['tokens_per_s']:.0f} "
                      f"({train[k]['tokens_per_s'] / padded[k]['tokens_per_s']:.2f}x)" for k in padded)
          + f"; proxy x full LLM padded {padded['proxy']['tokens_per_s'] / padded['full-llm']['tokens_per_s']:.2f}")
    for b, r in sweep.items():
        print(f"proxy at batch {b}: {r['tokens_per_s']:.0f} tokens/s, useful / peak FLOP/s "
              f"{r['train_flops_per_s'] / peak_used:.2f}, processed / peak {r['processed_flops_per_s'] / peak_used:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
