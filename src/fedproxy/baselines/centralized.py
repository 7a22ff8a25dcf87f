"""Centralized fine-tuning of the LLM on pooled client data: the upper bound.

Same trainable tensors, optimizer and number of examples seen as the federated run
(rounds x local_steps x clients steps of the same batch size).
"""

import dataclasses
import random
import time

from ..federated import local_train, trainable_names
from ..methods import METHODS
from ..modeling import load_params, snapshot


@METHODS.register("centralized")
def centralized(ctx) -> dict:
    t0 = time.perf_counter()
    c = ctx.cfg
    pooled = [e for part in ctx.bench.train for e in part]
    random.Random(c.seed).shuffle(pooled)
    steps = c.fed.rounds * c.fed.local_steps * len(ctx.bench.train)
    fed = dataclasses.replace(c.fed, local_steps=steps, prox_mu=0.0, lora_r=0, lr=c.fed.centralized_lr)
    names = trainable_names(ctx.llm, fed)
    res = local_train(ctx.llm, snapshot(ctx.llm, names), pooled, ctx.encoder, fed, ctx.device, c.seed, ctx.bf16,
                      progress="centralized steps" if ctx.progress else None)
    load_params(ctx.llm, {n: ctx.llm_state[n] + res.update[n] for n in names})
    out = {**ctx.evaluate(ctx.llm), "wall_seconds": time.perf_counter() - t0,
           "trainable_params": sum(v.numel() for v in res.update.values()), "steps": steps,
           "client_tokens_per_s": res.metrics["tokens_per_s"], "peak_rss_mb": res.metrics["peak_rss_mb"]}
    ctx.restore_llm()
    return out
