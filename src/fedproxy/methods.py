"""Methods a run can compare. FedProxy itself and the naive plug-in live here; the other
baselines are in :mod:`fedproxy.baselines`. Each method is ``fn(ctx) -> result dict``."""

from __future__ import annotations

import dataclasses
import random
import time

from .compress import save_proxy
from .compress.base import ProxyMap, build_proxy
from .compress.distill import distill
from .context import RunContext
from .federated import run_federation, trainable_names
from .federated.client import class_tokens
from .fuse import save_fused
from .fuse.align import align_delta, input_grams
from .modeling import blocks, load_params, snapshot
from .proxies import choose_plugin, make_proxy, round_monitor
from .registry import Registry

METHODS: Registry = Registry("method")


def proxy_pipeline(ctx: RunContext, name: str, *, compress_cfg, fed_cfg, fuse_variants, fuse_scales,
                   blocks_only=None, keep=None, save: bool = True, shards=None,
                   align_ridge: float | None = None, keep_llm: bool = False,
                   distill_frozen: list[int] | None = None) -> dict:
    """Compress (or use ``keep``), federate on the proxy, fuse into the LLM, evaluate.

    ``shards`` replaces the clients' training data (default: ``ctx.bench.train``). With
    ``align_ridge``, fusion also tries activation-aligned deltas (:mod:`fedproxy.fuse.align`);
    with ``keep_llm``, the unchanged LLM competes on validation too (``fuse.keep_llm``). With
    ``keep`` and ``distill_frozen`` the fixed proxy is distilled like FedProxy's (``compress_cfg``)
    except for the blocks ``distill_frozen`` (Offsite-Tuning's emulator around its adapter).
    """
    t0 = time.perf_counter()
    class_tokens(ctx.encoder, fed_cfg)  # a config this benchmark cannot train fails before compression
    work = ctx.method_dir(name)
    if keep is None:
        proxy, pmap, comp_info = make_proxy(ctx, compress_cfg, work)
    else:
        proxy = build_proxy(ctx.llm, keep).to(ctx.device)
        pmap = ProxyMap(len(blocks(ctx.llm)), keep, ctx.llm.config.model_type, "fixed")
        comp_info = {"method": "fixed", "keep": keep}
        if distill_frozen is not None and compress_cfg.distill_steps > 0:
            history = distill(proxy, ctx.llm, pmap, ctx.server_text_batches(compress_cfg.distill_batch), compress_cfg,
                              ctx.device, ctx.cfg.seed, ctx.bf16, ckpt_dir=work, progress=ctx.progress,
                              frozen_blocks=distill_frozen)
            comp_info.update(emulator_distilled=True, distill_loss_first=history[0], distill_loss_last=history[-1])
    proxy_before = ctx.evaluate(proxy)
    keep_files = save and blocks_only is None
    if keep_files:  # the base proxy, so `fedproxy fuse --proxy proxy --tuned proxy_tuned` can redo stage 3
        save_proxy(proxy, pmap, work / "proxy", ctx.tokenizer)
    monitor = round_monitor(ctx, proxy, pmap, fed_cfg.curve, fed_cfg.curve_test)
    if fed_cfg.engine == "simulation":
        from .flower_app import simulate  # Flower and Ray load only when asked for

        run_cfg = dataclasses.replace(ctx.cfg, fed=fed_cfg)
        server = simulate(run_cfg, proxy, ctx.tokenizer, len(ctx.bench.train), work / "flower", ctx.resume,
                          blocks_only, monitor, ctx.acceptance())
    else:
        names = trainable_names(proxy, fed_cfg, blocks_only)
        server = run_federation(proxy, snapshot(proxy, names), shards or ctx.bench.train, ctx.encoder, fed_cfg,
                                ctx.device, ctx.cfg.seed, ctx.bf16, ckpt_dir=work, resume=ctx.resume,
                                progress=ctx.progress, desc=f"{name}: rounds", monitor=monitor,
                                guard=ctx.acceptance())
    delta = server.total_delta()
    aligned, t_align = None, time.perf_counter()
    if align_ridge is not None:  # input statistics of the proxy as it was sent, before any client trained it
        load_params(proxy, server.initial)
        grams = input_grams(proxy, ctx.llm, pmap, ctx.server_text_batches(ctx.cfg.compress.distill_batch))
        aligned = align_delta(delta, grams, align_ridge)
        del grams
    t_align = time.perf_counter() - t_align
    load_params(proxy, server.result())
    proxy_after = ctx.evaluate(proxy)
    if keep_files:
        save_proxy(proxy, pmap, work / "proxy_tuned", ctx.tokenizer)
    t_fuse = time.perf_counter()
    recipe, trials = choose_plugin(ctx, delta, pmap, fuse_variants, fuse_scales, aligned, keep_llm)
    t_fuse = time.perf_counter() - t_fuse
    fused = ctx.llm_eval("test") if recipe["scale"] == 0 else ctx.evaluate(ctx.llm)
    if save:
        save_fused(ctx.llm, ctx.tokenizer, {**recipe, "proxy_map": pmap.keep, "method": name}, work / "fused_llm")
    ctx.restore_llm()
    return {
        **fused,
        "wall_seconds": time.perf_counter() - t0,
        "trainable_params": sum(v.numel() for v in server.initial.values()),
        "compression": comp_info,
        "proxy_before_fl": proxy_before,
        "proxy_after_fl": proxy_after,
        "fusion": {**recipe, "trials": trials, "seconds": t_fuse + t_align},
        "federation": server.summary(),
    }


def _align(c) -> float | None:
    """The ridge of the aligned plug-in when ``fuse.align`` is on, else None (plain deltas only)."""
    return c.fuse.align_ridge if c.fuse.align else None


@METHODS.register("fedproxy")
def fedproxy_method(ctx: RunContext) -> dict:
    c = ctx.cfg
    return proxy_pipeline(ctx, "fedproxy", compress_cfg=c.compress, fed_cfg=c.fed,
                          fuse_variants=c.fuse.variants, fuse_scales=c.fuse.scales, align_ridge=_align(c),
                          keep_llm=c.fuse.keep_llm)


@METHODS.register("proxy-centralized")
def proxy_centralized(ctx: RunContext) -> dict:
    """FedProxy's compression and fusion with the proxy trained on pooled data, no federation.

    A diagnostic upper bound for the FedProxy pipeline: the gap to ``fedproxy`` is what
    federated (non-IID) training costs, the gap to ``centralized`` what the proxy and the
    plug-in lose. Same examples seen and learning rate as the federated run.
    """
    c = ctx.cfg
    pooled = [e for part in ctx.bench.train for e in part]
    random.Random(c.seed).shuffle(pooled)
    pooled_only = {"fraction": 1.0, "min_clients": 1, "dp_noise": 0.0, "dp_clip": 0.0, "max_update_norm": 0.0}
    if c.fed.patience:  # stretches of one round's examples, one continuous optimizer: early stopping as federated
        fed = c.fed.plain(local_steps=c.fed.local_steps * len(ctx.bench.train), keep_optimizer_state=True,
                          wire_dtype="float32", curve=False, **pooled_only)
    else:
        fed = c.fed.plain(rounds=1, local_steps=c.fed.rounds * c.fed.local_steps * len(ctx.bench.train),
                          **pooled_only)
    return proxy_pipeline(ctx, "proxy-centralized", compress_cfg=c.compress, fed_cfg=fed,
                          fuse_variants=c.fuse.variants, fuse_scales=c.fuse.scales, save=False, shards=[pooled],
                          align_ridge=_align(c), keep_llm=c.fuse.keep_llm)


@METHODS.register("naive-plugin")
def naive_plugin(ctx: RunContext) -> dict:
    """Uniform drop, no distillation, FedAvg, deltas added to source blocks at scale 1."""
    c = ctx.cfg
    comp = dataclasses.replace(c.compress, method="uniform", distill_steps=0)
    fed = c.fed.plain()
    return proxy_pipeline(ctx, "naive-plugin", compress_cfg=comp, fed_cfg=fed, fuse_variants=["source"],
                          fuse_scales=[1.0], save=False)
