"""``agreement``: agreement-weighted clients + a weighted sign-consensus merge (named ``fedproxy``
in earlier releases; the paper's own stage-2 aggregator is ``h-ties``, :mod:`.hties`).

1. Each client's weight is its sample share times ``exp(beta * a_i)``, where ``a_i`` is the
   mean cosine similarity of its update to the other clients' updates: a client pulling
   against the rest (a skewed domain) is down-weighted, not dropped.
2. Per coordinate, the sign is elected from the weighted sum; clients disagreeing with it
   are left out of that coordinate and the rest are averaged with renormalised weights
   (TIES' disjoint mean without trimming), so opposite pushes do not cancel into noise.
"""

from __future__ import annotations

import torch

from .base import AGGREGATORS, Delta, bcast, stack, weights_of
from .ties import disjoint_mean, magnitude_trim

BETA = 2.0


def agreement_weights(deltas: list[Delta], sizes: list[int], beta: float = BETA) -> torch.Tensor:
    """Sample-share x exp(beta x mean cosine to the other clients), normalised to sum 1."""
    base = weights_of(sizes)
    n = len(deltas)
    if n == 1:
        return base
    flat = torch.stack([torch.cat([v.float().flatten() for v in d.values()]) for d in deltas])
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = unit @ unit.T
    agreement = (cos.sum(1) - cos.diagonal()) / (n - 1)
    w = base * torch.exp(beta * agreement)
    return w / w.sum()


def sign_consensus(stacked: torch.Tensor, weights: torch.Tensor, density: float = 1.0) -> torch.Tensor:
    x = magnitude_trim(stacked, density)
    sign = torch.where((x * bcast(weights, x)).sum(0) >= 0, 1.0, -1.0)
    return disjoint_mean(x, sign, weights)


@AGGREGATORS.register("agreement")
def agreement(deltas: list[Delta], sizes, opts, state) -> Delta:
    w = agreement_weights(deltas, sizes)
    state["last_weights"] = w.tolist()
    return {k: sign_consensus(stack(deltas, k), w) for k in deltas[0]}
