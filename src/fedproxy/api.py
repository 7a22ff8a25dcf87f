"""Python API for the stand-alone stages (what `fedproxy compress` and `fedproxy fuse` call)."""

from __future__ import annotations

import json
from pathlib import Path

from .compress import ProxyMap, save_proxy
from .compress.fidelity import fidelity_report
from .config import RunConfig
from .context import build_context
from .errors import ModelError
from .fuse import fuse_state, save_fused
from .modeling import load_params, load_pretrained, resolve_checkpoint, snapshot


def compress_to_dir(cfg: RunConfig, out: Path, progress: bool = True, cache=None) -> Path:
    """Compress the configured LLM, save the proxy + map, and write ``fidelity.json``."""
    ctx = build_context(cfg, out, progress=progress, cache=cache)
    report, res = fidelity_report(ctx)
    save_proxy(res.proxy, res.pmap, out / "proxy", ctx.tokenizer)
    (out / "fidelity.json").write_text(json.dumps({"seed": cfg.seed, "config": cfg.compress.__dict__, **report},
                                                  indent=2))
    return out


def proxy_delta(proxy: str | Path, tuned: str | Path):
    """(base proxy model, its map, ``tuned - proxy`` over the tensors that changed) from two proxy directories."""
    pmap_path = Path(proxy) / "proxy_map.json"
    if not pmap_path.is_file():
        raise ModelError(f"{proxy} has no proxy_map.json; pass the directory written by `fedproxy compress`")
    pmap = ProxyMap.load(pmap_path)
    base, _ = load_pretrained(proxy)
    tuned_model, _ = load_pretrained(tuned)
    b, t = snapshot(base), snapshot(tuned_model)
    if set(b) != set(t) or any(b[k].shape != t[k].shape for k in b):
        raise ModelError(f"{tuned} does not have the same tensors as the proxy {proxy}")
    return base, pmap, {k: t[k] - b[k] for k in b if not (t[k] == b[k]).all()}


def fuse_checkpoints(llm: str, proxy: str, tuned: str, out: Path, variant: str = "source", scale: float = 1.0,
                     cache=None) -> Path:
    """Fuse ``tuned - proxy`` into ``llm`` using ``proxy/proxy_map.json``."""
    _, pmap, delta = proxy_delta(proxy, tuned)
    model, tok = load_pretrained(resolve_checkpoint(llm, cache))
    load_params(model, fuse_state(snapshot(model), delta, pmap, variant, scale))
    return save_fused(model, tok, {"variant": variant, "scale": scale, "proxy_map": pmap.keep}, out)
