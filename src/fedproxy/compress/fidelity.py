"""Fidelity and IP report for a compression setting (what `fedproxy compress` prints)."""

from __future__ import annotations

import dataclasses
import time

from ..eval import headline, perplexity
from . import compress


def fidelity_report(ctx, cfg=None) -> tuple[dict, object]:
    """Compare LLM, uniform-drop proxy, selected-raw proxy and selected+distilled proxy.

    Perplexity is on held-out server text; accuracy on the benchmark test splits. The IP
    promise is the gap between the LLM and the distilled proxy, reported as ``ip_gap``.
    """
    cfg = cfg or ctx.cfg.compress
    heldout = ctx.heldout_split()[1]
    batches = ctx.server_text_batches(cfg.distill_batch)

    def measure(model) -> dict:
        return {"perplexity": perplexity(model, ctx.encoder, heldout, ctx.device),
                "score": headline(ctx.evaluate(model))}

    rows = {"llm": measure(ctx.llm)}
    variants = {
        "uniform_raw": dataclasses.replace(cfg, method="uniform", distill_steps=0),
        f"{cfg.method}_raw": dataclasses.replace(cfg, distill_steps=0),
        f"{cfg.method}_distilled": cfg,
    }
    final = None
    for name, vcfg in variants.items():
        if name in rows:
            continue
        t0 = time.perf_counter()
        res = compress(ctx.llm, batches, vcfg, ctx.device, ctx.cfg.seed, ctx.bf16, progress=ctx.progress)
        rows[name] = {**measure(res.proxy), "seconds": time.perf_counter() - t0, "keep": res.pmap.keep,
                      "params": res.info["proxy_params"], "compression_ratio": res.info["compression_ratio"]}
        final = res
    dist = rows[f"{cfg.method}_distilled"]
    report = {
        "llm_params": final.info["llm_params"],
        "rows": rows,
        "ip_gap": {"score": rows["llm"]["score"] - dist["score"],
                   "perplexity_ratio": dist["perplexity"] / rows["llm"]["perplexity"]},
        "block_scores": final.info["block_scores"],
    }
    return report, final
