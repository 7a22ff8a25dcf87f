"""FedExP (Jhunjhunwala et al., ICLR 2023): FedAvg with an adaptive server step size.

When non-IID clients pull in different directions their mean delta is much shorter than
each delta, so plain averaging moves the model less per round than any client did. FedExP
extrapolates by ``eta = max(1, sum_i p_i ||d_i||^2 / (2 (||mean||^2 + eps)))``: eta = 1 when
clients agree, up to ~M/2 when their updates are orthogonal.
"""

from .base import AGGREGATORS, flat_norm, weighted_mean, weights_of

EPS = 1e-12


def fedexp_step(deltas, weights) -> float:
    """The server step size for these (delta, weight) pairs."""
    mean = weighted_mean(deltas, weights)
    spread = sum(float(w) * flat_norm(d) ** 2 for d, w in zip(deltas, weights))
    return max(1.0, spread / (2.0 * (flat_norm(mean) ** 2 + EPS)))


@AGGREGATORS.register("fedexp")
def fedexp(deltas, sizes, opts, state):
    w = weights_of(sizes)
    eta = fedexp_step(deltas, w)
    state.setdefault("server_steps", []).append(eta)  # recorded in round checkpoints, for the report
    return {k: eta * v for k, v in weighted_mean(deltas, w).items()}
