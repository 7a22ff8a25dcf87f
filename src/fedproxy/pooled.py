"""Fine-tuning LLM tensors directly on the pooled client data: the centralized references.

Same trainable tensors, optimizer and number of examples seen as the federated run
(rounds x local_steps x clients steps of the same batch size). Below the methods
(:mod:`fedproxy.methods` declares which tensors a recipe trains this way).
"""

import dataclasses
import random
import time
from pathlib import Path

from .compress import ProxyMap, select_blocks, split_block_key
from .context import RunContext
from .federated import local_train, trainable_names
from .modeling import load_params, snapshot


def kept_block_names(ctx: RunContext) -> tuple[list[str], list[int]]:
    """The LLM tensors of the blocks FedProxy's proxy keeps (and the final norm), and those blocks.

    The same selection, on the same server text, as the fedproxy method's compression, or the
    map of ``compress.proxy_dir``: what fusion with variant ``source`` changes.
    """
    c = ctx.cfg
    if c.compress.proxy_dir:
        pmap = ProxyMap.load(Path(c.compress.proxy_dir) / "proxy_map.json")
        pmap.check_llm(ctx.llm)
    else:
        pmap = select_blocks(ctx.llm, ctx.server_text_batches(c.compress.distill_batch), c.compress, ctx.device)
    keep = set(pmap.keep)
    return [n for n in trainable_names(ctx.llm, c.fed) if (p := split_block_key(n)) is None or p[1] in keep], pmap.keep


def pooled_finetune(ctx: RunContext, names: list[str]) -> dict:
    """Fine-tune the LLM tensors ``names`` on the pooled client data, evaluate, restore the LLM.

    With ``fed.patience`` the same budget is cut into ``fed.rounds`` stretches of one round's
    examples (``local_steps x clients`` steps), AdamW's moments carried across, and training
    stops once the server-validation accuracy has not improved for ``patience`` stretches; the
    best stretch's weights are kept (early stopping, as the federated methods stop).
    """
    t0 = time.perf_counter()
    c = ctx.cfg
    pooled = [e for part in ctx.bench.train for e in part]
    random.Random(c.seed).shuffle(pooled)
    per_round = c.fed.local_steps * len(ctx.bench.train)
    fed = c.fed.plain(local_steps=c.fed.rounds * per_round, lora_r=0, lr=c.fed.centralized_lr)
    start = snapshot(ctx.llm, names)
    if not c.fed.patience:
        res = local_train(ctx.llm, start, pooled, ctx.encoder, fed, ctx.device, c.seed, ctx.bf16,
                          progress="centralized steps" if ctx.progress else None)
        best, steps, curve, metrics = {n: start[n] + res.update[n] for n in names}, fed.local_steps, [], res.metrics
    else:
        best, steps, curve, metrics = _early_stopped(ctx, names, start, pooled, dataclasses.replace(
            fed, local_steps=per_round))
    load_params(ctx.llm, best)
    out = {**ctx.evaluate(ctx.llm), "wall_seconds": time.perf_counter() - t0,
           "trainable_params": sum(v.numel() for v in start.values()), "steps": steps,
           "examples_seen": steps * fed.batch_size, "val_curve": curve,
           "client_tokens_per_s": metrics["tokens_per_s"], "peak_rss_mb": metrics["peak_rss_mb"]}
    ctx.restore_llm()
    return out


def _early_stopped(ctx, names, start, pooled, fed):
    """Train in stretches of ``fed.local_steps`` steps until validation stops improving; the best weights."""
    c = ctx.cfg
    current, moments = start, {}
    best, best_score, best_at, curve, steps = start, ctx.val_accuracy(ctx.llm), 0, [], 0
    for r in range(c.fed.rounds):
        res = local_train(ctx.llm, current, pooled, ctx.encoder, fed, ctx.device, c.seed * 1009 + r, ctx.bf16,
                          progress=f"centralized stretch {r + 1}" if ctx.progress else None, opt_state=moments)
        current = {n: current[n] + res.update[n] for n in names}
        steps += fed.local_steps
        score = ctx.val_accuracy(ctx.llm)  # local_train leaves the trained weights in the model
        curve.append({"round": r + 1, "val_accuracy": score, "examples_seen": steps * fed.batch_size})
        if score > best_score:
            best, best_score, best_at = current, score, r + 1
        elif r + 1 - best_at >= c.fed.patience:
            break
    return best, steps, curve, res.metrics
