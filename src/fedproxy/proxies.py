"""The proxy of a run: loaded from ``compress.proxy_dir``, or compressed once and shared.

Below both the methods and the Flower ServerApp, which each need it, so neither imports the other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from .compress import compress, load_proxy, save_proxy
from .context import RunContext


def make_proxy(ctx: RunContext, compress_cfg, work: Path):
    """The proxy, its map and a summary: loaded from ``compress.proxy_dir`` or compressed now."""
    if compress_cfg.proxy_dir:
        proxy, pmap = load_proxy(Path(compress_cfg.proxy_dir))
        pmap.check_llm(ctx.llm)
        return proxy.to(ctx.device), pmap, {"method": "loaded", "proxy_dir": compress_cfg.proxy_dir, "keep": pmap.keep}
    # Methods of one run that compress alike (fedproxy, proxy-centralized) share one proxy.
    key = hashlib.sha256(json.dumps([dataclasses.asdict(compress_cfg), ctx.cfg.seed, ctx.bf16],
                                    sort_keys=True).encode()).hexdigest()[:12]
    shared = ctx.out / "work" / "compressed" / key
    if (shared / "compress_info.json").is_file():
        proxy, pmap = load_proxy(shared)
        info = json.loads((shared / "compress_info.json").read_text())
        return proxy.to(ctx.device), pmap, {**info, "shared_from": str(shared)}
    comp = compress(ctx.llm, ctx.server_text_batches(compress_cfg.distill_batch), compress_cfg, ctx.device,
                    ctx.cfg.seed, ctx.bf16, ckpt_dir=work, progress=ctx.progress)
    save_proxy(comp.proxy, comp.pmap, shared, ctx.tokenizer)
    (shared / "compress_info.json").write_text(json.dumps(comp.info))  # written last: marks the copy complete
    return comp.proxy, comp.pmap, comp.info
