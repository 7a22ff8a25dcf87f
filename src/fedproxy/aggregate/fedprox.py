"""FedProx (Li et al., 2020): the proximal term lives on the client (``fed.prox_mu``); the
server takes the sample-size weighted mean, as FedAvg does."""

from .base import AGGREGATORS, weighted_mean, weights_of


@AGGREGATORS.register("fedprox")
def fedprox(deltas, sizes, opts, state):
    return weighted_mean(deltas, weights_of(sizes))
