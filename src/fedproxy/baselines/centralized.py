"""Centralized fine-tuning of the LLM on pooled client data: the upper bound.

Same trainable tensors, optimizer and number of examples seen as the federated run
(rounds x local_steps x clients steps of the same batch size).
"""

import random
import time
from pathlib import Path

from ..compress import ProxyMap, select_blocks, split_block_key
from ..federated import local_train, trainable_names
from ..methods import METHODS
from ..modeling import load_params, snapshot


def pooled_finetune(ctx, names: list[str]) -> dict:
    """Fine-tune the LLM tensors ``names`` on the pooled client data, evaluate, restore the LLM."""
    t0 = time.perf_counter()
    c = ctx.cfg
    pooled = [e for part in ctx.bench.train for e in part]
    random.Random(c.seed).shuffle(pooled)
    steps = c.fed.rounds * c.fed.local_steps * len(ctx.bench.train)
    fed = c.fed.plain(local_steps=steps, lora_r=0, lr=c.fed.centralized_lr)
    res = local_train(ctx.llm, snapshot(ctx.llm, names), pooled, ctx.encoder, fed, ctx.device, c.seed, ctx.bf16,
                      progress="centralized steps" if ctx.progress else None)
    load_params(ctx.llm, {n: ctx.llm_state[n] + res.update[n] for n in names})
    out = {**ctx.evaluate(ctx.llm), "wall_seconds": time.perf_counter() - t0,
           "trainable_params": sum(v.numel() for v in res.update.values()), "steps": steps,
           "client_tokens_per_s": res.metrics["tokens_per_s"], "peak_rss_mb": res.metrics["peak_rss_mb"]}
    ctx.restore_llm()
    return out


@METHODS.register("centralized")
def centralized(ctx) -> dict:
    return pooled_finetune(ctx, trainable_names(ctx.llm, ctx.cfg.fed))


@METHODS.register("centralized-kept")
def centralized_kept(ctx) -> dict:
    """Centralized fine-tuning of only the LLM blocks the proxy keeps (and the final norm).

    A diagnostic reference for the plug-in: fusion with variant ``source`` changes exactly
    these tensors, so this is what they reach when trained directly on the pooled data, the
    practical ceiling of a fused proxy delta. Its gap to ``centralized`` is what leaving the
    dropped blocks untouched costs.
    """
    c = ctx.cfg
    if c.compress.proxy_dir:
        pmap = ProxyMap.load(Path(c.compress.proxy_dir) / "proxy_map.json")
        pmap.check_llm(ctx.llm)
    else:  # the same selection, on the same server text, as the fedproxy method's compression
        pmap = select_blocks(ctx.llm, ctx.server_text_batches(c.compress.distill_batch), c.compress, ctx.device)
    keep = set(pmap.keep)
    names = [n for n in trainable_names(ctx.llm, c.fed) if (p := split_block_key(n)) is None or p[1] in keep]
    return {**pooled_finetune(ctx, names), "kept_blocks": pmap.keep}
