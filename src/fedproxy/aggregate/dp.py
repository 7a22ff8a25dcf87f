"""Client-level differential privacy (DP-FedAvg): clip each update, add Gaussian noise to the sum.

The privacy budget comes from Opacus' RDP accountant rather than a home-made one.
"""

from __future__ import annotations

import torch

from .base import Delta, flat_norm


def clip_update(delta: Delta, bound: float) -> Delta:
    scale = min(1.0, bound / max(flat_norm(delta), 1e-12))
    return {k: v * scale for k, v in delta.items()}


def add_gaussian_noise(mean_delta: Delta, noise_multiplier: float, bound: float, n_clients: int,
                       gen: torch.Generator) -> Delta:
    """Noise for the *mean* of ``n_clients`` clipped updates: std = z * C / n."""
    std = noise_multiplier * bound / max(1, n_clients)
    return {k: v + torch.randn(v.shape, generator=gen) * std for k, v in mean_delta.items()}


def dp_epsilon(noise_multiplier: float, sample_rate: float, rounds: int, delta: float) -> float:
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(noise_multiplier, sample_rate, rounds)]
    return float(acc.get_epsilon(delta=delta))
