"""DARE (Yu et al., 2024): drop each entry with probability 1 - density, rescale, then average."""

from __future__ import annotations

import torch

from .base import AGGREGATORS, bcast, stack, weights_of


def dare_drop(x: torch.Tensor, density: float, gen: torch.Generator) -> torch.Tensor:
    keep = torch.rand(x.shape, generator=gen) < density
    return x * keep / density


@AGGREGATORS.register("dare")
def dare(deltas, sizes, opts, state):
    round_idx = state.get("round", 0)
    # A fresh, explicit generator per round keeps DARE reproducible and free of global RNG state.
    gen = torch.Generator().manual_seed(opts.seed * 100003 + round_idx)
    state["round"] = round_idx + 1
    w = weights_of(sizes)
    out = {}
    for k in deltas[0]:
        x = dare_drop(stack(deltas, k), opts.density, gen)
        out[k] = (x * bcast(w, x)).sum(0)
    return out
