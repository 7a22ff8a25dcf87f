"""Activation-aligned plug-in: carry a proxy layer's output change over to the LLM's inputs.

A proxy block's linear layer learned ``dW`` on its own inputs ``x_p``; at the source LLM
block the same layer sees other inputs ``x_l`` (the proxy lacks the dropped blocks and its
kept blocks were distilled). Instead of adding ``dW`` as is, take the LLM delta ``A`` that
reproduces the proxy's output change on server text:

    min_A  sum_t |A x_l,t - dW x_p,t|^2 + lam |A|^2   =>   A = dW C_pl (C_ll + lam I)^-1

with ``C_pl = sum_t x_p,t x_l,t^T`` and ``C_ll = sum_t x_l,t x_l,t^T`` (a RegMean-style closed
form; no training, only public server text). Where ``x_p = x_l`` it returns ``dW`` up to the
ridge. :func:`align_delta` is pure; :func:`input_grams` runs both models to collect the sums.
"""

from __future__ import annotations

import torch
from torch import nn

from ..compress.base import ProxyMap, split_block_key
from ..modeling import blocks

Delta = dict[str, torch.Tensor]
Grams = dict[str, tuple[torch.Tensor, torch.Tensor]]


def align_delta(delta: Delta, grams: Grams, ridge: float) -> Delta:
    """``delta`` with every tensor named in ``grams`` replaced by its aligned version.

    ``ridge`` is relative to the mean input energy (``lam = ridge * mean(diag(C_ll))``);
    tensors without statistics (norms, biases) pass through unchanged.
    """
    out = {}
    for key, d in delta.items():
        if key not in grams:
            out[key] = d
            continue
        c_pl, c_ll = grams[key]
        if d.dim() != 2 or c_pl.shape != (d.shape[1], d.shape[1]) or c_ll.shape != c_pl.shape:
            raise ValueError(f"statistics for '{key}' have shape {tuple(c_pl.shape)}, but its delta is "
                             f"{tuple(d.shape)}; they must come from the same proxy")
        lam = ridge * c_ll.diagonal().mean()
        eye = torch.eye(c_ll.shape[0], dtype=c_ll.dtype, device=c_ll.device)
        rhs = d.to(c_pl.dtype) @ c_pl  # A (C_ll + lam I) = dW C_pl, and C_ll is symmetric
        out[key] = torch.linalg.solve(c_ll + lam * eye, rhs.T).T.to(d.dtype)
    return out


def _record_linear_inputs(model: nn.Module, block_ids: list[int], prefix: str):
    seen: dict[str, torch.Tensor] = {}
    handles = []
    layers = blocks(model)
    for b in block_ids:
        for name, mod in layers[b].named_modules():
            if isinstance(mod, nn.Linear):
                key = f"{prefix}{b}.{name}.weight"
                handles.append(mod.register_forward_pre_hook(lambda _m, args, k=key: seen.__setitem__(k, args[0])))
    return seen, handles


@torch.no_grad()
def input_grams(proxy: nn.Module, llm: nn.Module, pmap: ProxyMap,
                batches: list[tuple[torch.Tensor, torch.Tensor]]) -> Grams:
    """Proxy-keyed linear weight name -> (C_pl, C_ll) over the real tokens of ``batches``.

    Layers that read the same input (q/k/v, gate/up) share one pair of tensors.
    """
    prefix = next(p[0] for n, _ in proxy.named_parameters() if (p := split_block_key(n)))
    p_in, p_handles = _record_linear_inputs(proxy, list(range(len(pmap.keep))), prefix)
    l_in, l_handles = _record_linear_inputs(llm, pmap.keep, prefix)
    sums: dict[str, list[torch.Tensor]] = {}
    alias: dict[str, str] = {}
    device = next(llm.parameters()).device
    try:
        for ids, mask in batches:
            ids, mask = ids.to(device), mask.to(device)
            proxy(input_ids=ids, attention_mask=mask)
            llm(input_ids=ids, attention_mask=mask)
            valid = mask.bool()
            done: dict[int, str] = {}
            for key, xp in p_in.items():
                _, j, rest = split_block_key(key)
                xl = l_in[f"{prefix}{pmap.keep[j]}.{rest}"]
                if (first := done.get(id(xp))) is not None:  # same input as an earlier layer of this block
                    alias[key] = first
                    continue
                done[id(xp)] = alias[key] = key
                a, b = xp[valid].double(), xl[valid].double()
                acc = sums.setdefault(key, [0.0, 0.0])
                acc[0], acc[1] = acc[0] + a.T @ b, acc[1] + b.T @ b
    finally:
        for h in p_handles + l_handles:
            h.remove()
    return {key: (sums[first][0], sums[first][1]) for key, first in alias.items()}
