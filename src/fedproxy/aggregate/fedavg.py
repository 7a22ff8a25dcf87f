"""FedAvg: sample-size weighted mean of client deltas."""

from .base import AGGREGATORS, weighted_mean, weights_of


@AGGREGATORS.register("fedavg")
def fedavg(deltas, sizes, opts, state):
    return weighted_mean(deltas, weights_of(sizes))
