"""Shared types and tensor helpers for aggregators (pure functions over state-dict deltas)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import UpdateRejected
from ..registry import Registry

Delta = dict[str, torch.Tensor]


@dataclass(frozen=True)
class AggOptions:
    """Knobs an aggregator may read; built from :class:`FedConfig`."""

    density: float = 0.2
    server_lr: float = 1.0
    momentum: float = 0.9
    seed: int = 0


# fn(deltas, sizes, opts, state) -> aggregated delta. ``state`` persists across rounds
# (server optimizer buffers) and is saved in round checkpoints.
Aggregator = Callable[[list[Delta], list[int], AggOptions, dict], Delta]
AGGREGATORS: Registry[Aggregator] = Registry("aggregator")


def stack(deltas: list[Delta], key: str) -> torch.Tensor:
    return torch.stack([d[key].float() for d in deltas], dim=0)


def weights_of(sizes: list[int]) -> torch.Tensor:
    w = torch.tensor(sizes, dtype=torch.float32)
    return w / w.sum()


def bcast(w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return w.reshape(-1, *([1] * (like.dim() - 1)))


def weighted_mean(deltas: list[Delta], weights: torch.Tensor) -> Delta:
    out = {}
    for k in deltas[0]:
        x = stack(deltas, k)
        out[k] = (x * bcast(weights, x)).sum(0)
    return out


def flat_norm(delta: Delta) -> float:
    return math.sqrt(sum(float(v.float().pow(2).sum()) for v in delta.values()))


def validate_update(delta: Delta, reference: dict[str, torch.Size], max_norm: float = 0.0) -> float:
    """Raise :class:`UpdateRejected` for wrong keys/shapes, non-finite values or a norm over bound.

    Returns the update's L2 norm.
    """
    missing, extra = sorted(set(reference) - set(delta)), sorted(set(delta) - set(reference))
    if missing or extra:
        raise UpdateRejected(f"update keys differ from the model: missing {missing[:3]}, unexpected {extra[:3]}")
    for k, v in delta.items():
        if tuple(v.shape) != tuple(reference[k]):
            raise UpdateRejected(f"update '{k}' has shape {tuple(v.shape)}, expected {tuple(reference[k])}")
        if not torch.isfinite(v).all():
            raise UpdateRejected(f"update '{k}' contains NaN or Inf")
    norm = flat_norm(delta)
    if max_norm > 0 and norm > max_norm:
        raise UpdateRejected(f"update norm {norm:.3g} exceeds the bound {max_norm:.3g}")
    return norm
