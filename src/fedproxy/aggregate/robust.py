"""Byzantine-robust aggregators: coordinate-wise median and norm-bounded averaging."""

from __future__ import annotations

import torch

from .base import AGGREGATORS, flat_norm, weighted_mean, weights_of, stack


@AGGREGATORS.register("median")
def median(deltas, sizes, opts, state):
    return {k: stack(deltas, k).median(dim=0).values for k in deltas[0]}


@AGGREGATORS.register("normclip")
def normclip(deltas, sizes, opts, state):
    """Scale every update down to at most the median update norm, then FedAvg."""
    norms = torch.tensor([flat_norm(d) for d in deltas])
    bound = float(norms.median())
    scaled = [{k: v * min(1.0, bound / max(float(n), 1e-12)) for k, v in d.items()} for d, n in zip(deltas, norms)]
    return weighted_mean(scaled, weights_of(sizes))
