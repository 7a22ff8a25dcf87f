"""The proxy of a run: loaded from ``compress.proxy_dir``, or compressed once and shared; and the
server's check of each round's global proxy.

Below both the methods and the Flower ServerApp, which each need it, so neither imports the other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from . import checkpoint
from .compress import ProxyMap, compress, load_proxy, save_proxy
from .context import RunContext
from .eval import headline
from .frozen_cache import digest
from .fuse import fuse_into, select_fusion
from .modeling import load_params, snapshot


def proxy_key(compress_cfg, seed: int, bf16: bool) -> str:
    """The shared proxy's folder name: the compression settings that differ from their defaults, the
    seed and the precision. A setting a later version adds (at its default: the same proxy) leaves
    the key as it was, so a run resumed by that version does not compress again."""
    defaults = dataclasses.asdict(type(compress_cfg)())
    changed = {k: v for k, v in dataclasses.asdict(compress_cfg).items() if v != defaults.get(k)}
    return hashlib.sha256(json.dumps([changed, seed, bf16], sort_keys=True).encode()).hexdigest()[:12]


def make_proxy(ctx: RunContext, compress_cfg, work: Path):
    """The proxy, its map and a summary: loaded from ``compress.proxy_dir`` or compressed now."""
    if compress_cfg.proxy_dir:
        proxy, pmap = load_proxy(Path(compress_cfg.proxy_dir))
        pmap.check_llm(ctx.llm)
        return proxy.to(ctx.device), pmap, {"method": "loaded", "proxy_dir": compress_cfg.proxy_dir, "keep": pmap.keep}
    # Methods of one run that compress alike (fedproxy, proxy-centralized) share one proxy.
    shared = _shared_dir(ctx, compress_cfg)
    if (shared / "compress_info.json").is_file():
        proxy, pmap = load_proxy(shared)
        info = json.loads((shared / "compress_info.json").read_text())
        return proxy.to(ctx.device), pmap, {**info, "shared_from": str(shared)}
    comp = compress(ctx.llm, ctx.server_text_batches(compress_cfg.distill_batch), compress_cfg, ctx.device,
                    ctx.cfg.seed, ctx.bf16, ckpt_dir=work, progress=ctx.progress)
    # The proxy's content digest: methods of one seed run in different sessions (or machines) each
    # compress again, and benchmarks/records.py checks that they trained the same proxy.
    comp.info.update(proxy_key=shared.name, proxy_digest=digest(dict(comp.proxy.named_parameters())))
    save_proxy(comp.proxy, comp.pmap, shared, ctx.tokenizer)
    (shared / "compress_info.json").write_text(json.dumps(comp.info))  # written last: marks the copy complete
    return comp.proxy, comp.pmap, comp.info


def _shared_dir(ctx: RunContext, compress_cfg) -> Path:
    return ctx.out / "work" / "compressed" / proxy_key(compress_cfg, ctx.cfg.seed, ctx.bf16)


def proxy_test_eval(ctx: RunContext, proxy, compress_cfg) -> dict:
    """``proxy`` as :func:`make_proxy` made it, on every test split; computed once per run.

    The methods that share a proxy share its score before training too, kept beside the proxy
    (``test_eval.json``), so a method resumed in a later invocation does not score it again
    (1,000 greedy answers take minutes on a generation benchmark). A ``compress.proxy_dir``
    proxy may come from another run's data, so it is scored each time."""
    if compress_cfg.proxy_dir:
        return ctx.evaluate(proxy)
    return checkpoint.json_once(_shared_dir(ctx, compress_cfg) / "test_eval.json", lambda: ctx.evaluate(proxy))


def round_monitor(ctx: RunContext, proxy, pmap: ProxyMap, fed_cfg, fused_is_proxy: bool = False):
    """The server's check of each round's global proxy (:class:`fedproxy.federated.FederatedServer`).

    Scores the proxy on server validation. With ``fed.patience`` (and ``fed.stop_on`` fused, the
    default) also the fused LLM (variant source, x1) on validation, and that is the score patience
    watches: every method stops on what it would ship, whether or not the curve is recorded. With
    ``fed.stop_on`` proxy, patience watches the proxy's own validation score (the server's default,
    when ``score`` is absent). With ``fed.curve`` also the fused LLM on validation, and the proxy and
    the fused LLM on the first ``fed.curve_test`` examples of each test split (the learning curve).
    ``fused_is_proxy``: the clients train the LLM itself (identity map), so the fused LLM at x1 is
    the proxy and is scored once.
    """
    watch_fused = fed_cfg.patience > 0 and fed_cfg.stop_on == "fused"
    curve, fused = fed_cfg.curve, fed_cfg.curve or watch_fused
    base = snapshot(proxy) if fused and not fused_is_proxy else {}  # the proxy as compressed, before any round

    def monitor(params, full: bool = True) -> dict:
        load_params(proxy, params)
        out = {"val": ctx.val_eval(proxy)}
        if fused and full:
            if curve:
                out["proxy_test_score"] = headline(ctx.evaluate(proxy, fed_cfg.curve_test, loss=False))
            if fused_is_proxy:
                out["fused_val_score"] = headline(out["val"])
                if curve:
                    out["fused_test_score"] = out["proxy_test_score"]
            else:
                fuse_into(ctx.llm, {k: params[k] - base[k].float().cpu() for k in params}, pmap)
                out["fused_val_score"] = ctx.val_accuracy(ctx.llm)
                if curve:
                    out["fused_test_score"] = headline(ctx.evaluate(ctx.llm, fed_cfg.curve_test, loss=False))
                ctx.restore_llm()
            if watch_fused:
                out["score"] = out["fused_val_score"]
        return out

    return monitor


def choose_plugin(ctx: RunContext, delta, pmap: ProxyMap, variants: list[str], scales: list[float], aligned=None,
                  keep_llm: bool = True) -> tuple[dict, list[dict]]:
    """:func:`fedproxy.fuse.select_fusion` on server validation under this run's do-no-harm rule.

    With ``keep_llm`` the unchanged LLM (scored once per run) competes, and with ``fuse.accept_alpha``
    a plug-in must pass the acceptance test against it. Leaves ``ctx.llm`` fused with the choice.
    """
    accept = ctx.acceptance() if keep_llm and ctx.cfg.fuse.accept_alpha > 0 else None
    return select_fusion(ctx.llm, delta, pmap, variants, scales, ctx.val_eval, aligned, keep_llm, accept,
                         ctx.llm_eval("val") if keep_llm else None)
