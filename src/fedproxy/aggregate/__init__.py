"""Server-side aggregation of client deltas: pure functions over ``dict[str, Tensor]``.

A new aggregator is one file with ``@AGGREGATORS.register("name")``.
"""

from . import agreement, dare, fedavg, fedavgm, fedexp, fedprox, hties, robust, ties  # noqa: F401  (registration)
from .base import AGGREGATORS, AggOptions, Delta, flat_norm, validate_update
from .dp import add_gaussian_noise, clip_update, dp_epsilon

__all__ = ["AGGREGATORS", "AggOptions", "Delta", "add_gaussian_noise", "clip_update", "dp_epsilon",
           "flat_norm", "validate_update"]
