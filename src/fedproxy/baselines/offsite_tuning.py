"""Offsite-Tuning (Xiao et al., 2023): train a bottom/top adapter around a lossy emulator.

Adapter = the first and last ``ADAPTER`` LLM blocks; emulator = the middle blocks with a
uniform layer drop at the run's keep ratio. Clients train only the adapter (FedAvg); its
deltas are plugged back into the same LLM blocks.
"""


from ..compress.uniform import uniform_keep
from ..methods import METHODS, proxy_pipeline
from ..modeling import blocks

ADAPTER = 2


def adapter_size(num_layers: int) -> int:
    """ADAPTER blocks at each end, fewer on very shallow models so an emulator remains."""
    return max(1, min(ADAPTER, num_layers // 4))


def ot_keep(num_layers: int, keep_ratio: float) -> list[int]:
    a = adapter_size(num_layers)
    middle = list(range(a, num_layers - a))
    n_mid = min(len(middle), max(1, round(keep_ratio * len(middle))))
    emulator = [middle[i] for i in uniform_keep(len(middle), n_mid)] if middle else []
    return list(range(a)) + emulator + list(range(num_layers - a, num_layers))


@METHODS.register("offsite-tuning")
def offsite_tuning(ctx) -> dict:
    n = len(blocks(ctx.llm))
    keep = ot_keep(n, ctx.cfg.compress.keep_ratio)
    a = adapter_size(n)
    adapter_ids = list(range(a)) + list(range(len(keep) - a, len(keep)))
    fed = ctx.cfg.fed.plain(lora_r=0)
    return proxy_pipeline(ctx, "offsite-tuning", compress_cfg=None, fed_cfg=fed, keep=keep,
                          blocks_only=adapter_ids, fuse_variants=["source"], fuse_scales=ctx.cfg.fuse.scales,
                          save=False, keep_llm=ctx.cfg.fuse.keep_llm)
