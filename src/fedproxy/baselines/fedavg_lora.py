"""FedAvg-LoRA on the full LLM: clients receive the whole LLM (no IP protection)."""


from ..methods import METHODS, proxy_pipeline
from ..modeling import blocks


@METHODS.register("fedavg-lora")
def fedavg_lora(ctx) -> dict:
    fed = ctx.cfg.fed.plain(lora_r=ctx.cfg.fed.lora_r or 8)
    # The "proxy" is the LLM itself (identity map), so fusion is plain application of the delta.
    return proxy_pipeline(ctx, "fedavg-lora", compress_cfg=None, fed_cfg=fed, keep=list(range(len(blocks(ctx.llm)))),
                          fuse_variants=["source"], fuse_scales=[1.0], save=False)
