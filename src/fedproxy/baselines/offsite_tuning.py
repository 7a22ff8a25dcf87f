"""Offsite-Tuning (Xiao et al., 2023): train a bottom/top adapter around a lossy emulator.

Adapter = the first and last ``ADAPTER`` LLM blocks; emulator = the middle blocks with a
uniform layer drop at the run's keep ratio, distilled towards the LLM (logit KL + hidden-state
matching) on the same server text and with the same step budget as FedProxy's proxy, the
adapter held fixed, as the paper runs it. Clients train only the adapter (FedAvg); its deltas
are plugged back into the same LLM blocks. ``offsite-tuning-raw`` keeps the emulator an
undistilled layer drop (the baseline before distillation: perplexity in the millions).
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


def _offsite_tuning(ctx, name: str, distilled: bool) -> dict:
    n = len(blocks(ctx.llm))
    keep = ot_keep(n, ctx.cfg.compress.keep_ratio)
    a = adapter_size(n)
    adapter_ids = list(range(a)) + list(range(len(keep) - a, len(keep)))
    fed = ctx.cfg.fed.plain(lora_r=0)
    out = proxy_pipeline(ctx, name, compress_cfg=ctx.cfg.compress, fed_cfg=fed, keep=keep, blocks_only=adapter_ids,
                         fuse_variants=["source"], fuse_scales=ctx.cfg.fuse.scales, save=False,
                         keep_llm=ctx.cfg.fuse.keep_llm, distill_frozen=adapter_ids if distilled else None)
    out["emulator_distilled"] = bool(out["compression"].get("emulator_distilled"))
    return out


@METHODS.register("offsite-tuning")
def offsite_tuning(ctx) -> dict:
    return _offsite_tuning(ctx, "offsite-tuning", distilled=True)


@METHODS.register("offsite-tuning-raw")
def offsite_tuning_raw(ctx) -> dict:
    return _offsite_tuning(ctx, "offsite-tuning-raw", distilled=False)
