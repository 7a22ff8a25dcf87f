"""Fine-tuning LLM tensors directly on the pooled client data: the centralized references.

Same trainable tensors, optimizer and number of examples seen as the federated run
(rounds x local_steps x clients steps of the same batch size). Below the methods
(:mod:`fedproxy.methods` declares which tensors a recipe trains this way).
"""

import dataclasses
import random
import time
from pathlib import Path

from . import checkpoint
from .compress import ProxyMap, select_blocks, split_block_key
from .context import RunContext
from .eval import headline
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


def pooled_finetune(ctx: RunContext, names: list[str], work: Path | None = None) -> dict:
    """Fine-tune the LLM tensors ``names`` on the pooled client data, evaluate, restore the LLM.

    With ``fed.patience`` the same budget is cut into ``fed.rounds`` stretches of one round's
    examples (``local_steps x clients`` steps), AdamW's moments carried across, and training
    stops once the server-validation accuracy has not improved for ``patience`` stretches; the
    best stretch's weights are kept (early stopping, as the federated methods stop). With
    ``work``, each stretch ends with a checkpoint there, and a resumed run continues from it
    with the result of an uninterrupted one.
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
            fed, local_steps=per_round), work)
    load_params(ctx.llm, best)
    out = {**ctx.evaluate(ctx.llm), "wall_seconds": time.perf_counter() - t0,
           "trainable_params": sum(v.numel() for v in start.values()), "steps": steps,
           "examples_seen": steps * fed.batch_size, "val_curve": curve,
           "client_tokens_per_s": metrics["tokens_per_s"], "peak_rss_mb": metrics["peak_rss_mb"]}
    ctx.restore_llm()
    return out


def _early_stopped(ctx, names, start, pooled, fed, work: Path | None):
    """Train in stretches of ``fed.local_steps`` steps until validation stops improving; the best weights.

    The state after each stretch (weights, AdamW's moments, the best so far, the curve) goes to
    ``work/stretches.pt``: a centralized run on the decision-grade presets takes most of an hour."""
    c = ctx.cfg
    path = work / "stretches.pt" if work is not None else None
    state = checkpoint.load(path) if path is not None and ctx.resume else None
    if state is None:
        state = {"next": 0, "current": start, "moments": {}, "best": start,
                 "best_score": headline(ctx.llm_eval("val")), "best_at": 0, "curve": [], "steps": 0, "metrics": None}
    for r in range(state["next"], c.fed.rounds):
        if r - state["best_at"] >= c.fed.patience:  # no better stretch in the last `patience`
            break
        res = local_train(ctx.llm, state["current"], pooled, ctx.encoder, fed, ctx.device, c.seed * 1009 + r,
                          ctx.bf16, progress=f"centralized stretch {r + 1}" if ctx.progress else None,
                          opt_state=state["moments"])
        state["current"] = {n: state["current"][n] + res.update[n] for n in names}
        state["steps"] += fed.local_steps
        state["metrics"] = res.metrics
        score = ctx.val_accuracy(ctx.llm)  # local_train leaves the trained weights in the model
        state["curve"].append({"round": r + 1, "val_accuracy": score, "examples_seen": state["steps"] * fed.batch_size})
        if score > state["best_score"]:
            state.update(best=state["current"], best_score=score, best_at=r + 1)
        state["next"] = r + 1
        if path is not None:
            checkpoint.save(state, path)
    return state["best"], state["steps"], state["curve"], state["metrics"]
