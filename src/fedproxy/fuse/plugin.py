"""Training-free plug-in: map proxy deltas onto their source LLM blocks (pure functions)."""

from __future__ import annotations

import torch

from ..compress.base import ProxyMap, split_block_key
from ..errors import ModelError

Delta = dict[str, torch.Tensor]
VARIANTS = ("source", "share", "interpolate")


def _coefficients(pmap: ProxyMap, variant: str) -> dict[int, list[tuple[int, float]]]:
    """LLM block -> [(proxy block, coefficient)] saying how proxy deltas combine there."""
    if variant not in VARIANTS:
        raise ModelError(f"unknown fusion variant '{variant}'; choose one of {', '.join(VARIANTS)}")
    out: dict[int, list[tuple[int, float]]] = {}
    if variant == "source":
        return {k: [(j, 1.0)] for j, k in enumerate(pmap.keep)}
    if variant == "share":  # every dropped block reuses the delta of the kept block it belongs to
        return {b: [(j, 1.0)] for j, span in enumerate(pmap.spans) for b in span}
    keep = pmap.keep  # interpolate linearly between the deltas of the kept blocks around b
    for b in range(pmap.llm_num_layers):
        if b <= keep[0]:
            out[b] = [(0, 1.0)]
        elif b >= keep[-1]:
            out[b] = [(len(keep) - 1, 1.0)]
        else:
            j = max(i for i, k in enumerate(keep) if k <= b)
            t = (b - keep[j]) / (keep[j + 1] - keep[j])
            out[b] = [(j, 1.0 - t)] + ([(j + 1, t)] if t > 0 else [])
    return out


def map_delta(delta: Delta, pmap: ProxyMap, variant: str = "source", scale: float = 1.0) -> Delta:
    """Proxy-keyed delta -> LLM-keyed delta (block ids rewritten, dropped blocks per ``variant``)."""
    coef = _coefficients(pmap, variant)
    by_proxy_block: dict[int, dict[str, tuple[str, torch.Tensor]]] = {}
    out: Delta = {}
    for key, value in delta.items():
        parts = split_block_key(key)
        if parts is None:
            out[key] = scale * value
            continue
        prefix, j, rest = parts
        if j >= len(pmap.keep):
            raise ModelError(f"delta has proxy block {j} but the proxy map lists only {len(pmap.keep)} blocks")
        by_proxy_block.setdefault(j, {})[rest] = (prefix, value)
    for b, terms in coef.items():
        for j, c in terms:
            for rest, (prefix, value) in by_proxy_block.get(j, {}).items():
                key = f"{prefix}{b}.{rest}"
                out[key] = out.get(key, 0) + (scale * c) * value
    return out


def fuse_state(llm_state: Delta, delta: Delta, pmap: ProxyMap, variant: str = "source",
               scale: float = 1.0) -> Delta:
    """New LLM state: ``llm_state`` + mapped ``delta``. Unmapped tensors are returned as-is.

    Raises :class:`ModelError` when the map does not fit the LLM (block count, keys, shapes).
    """
    n_llm = 1 + max((p[1] for k in llm_state if (p := split_block_key(k))), default=-1)
    if n_llm != pmap.llm_num_layers:
        raise ModelError(
            f"proxy map was made for an LLM of {pmap.llm_num_layers} blocks but this LLM has {n_llm}; "
            "fuse into the LLM the proxy was compressed from"
        )
    mapped = map_delta(delta, pmap, variant, scale)
    out = dict(llm_state)
    for key, d in mapped.items():
        if key not in llm_state:
            raise ModelError(f"proxy tensor maps to '{key}', which the LLM does not have; wrong LLM or map")
        if tuple(llm_state[key].shape) != tuple(d.shape):
            raise ModelError(
                f"proxy delta for '{key}' has shape {tuple(d.shape)} but the LLM tensor is "
                f"{tuple(llm_state[key].shape)}; wrong LLM or map"
            )
        out[key] = llm_state[key] + d.to(llm_state[key].dtype)
    return out
