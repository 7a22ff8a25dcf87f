"""FedAvgM: server momentum on the averaged delta (Hsu et al., 2019)."""

from .base import AGGREGATORS, weighted_mean, weights_of


@AGGREGATORS.register("fedavgm")
def fedavgm(deltas, sizes, opts, state):
    avg = weighted_mean(deltas, weights_of(sizes))
    buf = state.get("momentum")
    buf = avg if buf is None else {k: opts.momentum * buf[k] + avg[k] for k in avg}
    state["momentum"] = buf
    return {k: opts.server_lr * v for k, v in buf.items()}
