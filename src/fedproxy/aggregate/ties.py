"""TIES merging (Yadav et al., 2023): trim, elect sign, disjoint mean.

Matches ``peft.utils.merge_utils.ties`` (per-tensor magnitude trim, 'total' sign election)
with uniform weights; the weighting lives in the FedProxy aggregator instead.
"""

from __future__ import annotations

import torch

from .base import AGGREGATORS, Delta, bcast, stack


def magnitude_trim(x: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``density`` fraction of largest-magnitude entries of each slice along dim 0."""
    if density >= 1.0:
        return x
    flat = x.reshape(x.shape[0], -1)
    k = int(density * flat.shape[1])
    if k == 0:
        return torch.zeros_like(x)
    idx = flat.abs().topk(k, dim=1).indices
    mask = torch.zeros_like(flat).scatter_(1, idx, 1.0)
    return (flat * mask).reshape(x.shape)


def elect_sign(x: torch.Tensor) -> torch.Tensor:
    """Per-coordinate sign of the summed (possibly weighted) updates; ties go to +."""
    return torch.where(x.sum(0) >= 0, 1.0, -1.0)


def disjoint_mean(x: torch.Tensor, sign: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over clients whose entry agrees with ``sign`` (weighted when ``weights`` given)."""
    agree = (x.sign() == sign).to(x.dtype)
    w = agree if weights is None else agree * bcast(weights, x)
    return (x * w).sum(0) / w.sum(0).clamp_min(1e-12 if weights is not None else 1.0)


def ties_merge(stacked: torch.Tensor, density: float) -> torch.Tensor:
    trimmed = magnitude_trim(stacked, density)
    return disjoint_mean(trimmed, elect_sign(trimmed))


@AGGREGATORS.register("ties")
def ties(deltas: list[Delta], sizes, opts, state) -> Delta:
    return {k: ties_merge(stack(deltas, k), opts.density) for k in deltas[0]}
