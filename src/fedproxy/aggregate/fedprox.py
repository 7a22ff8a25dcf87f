"""FedProx (Li et al., 2020): the proximal term lives on the client (``fed.prox_mu``); the
server takes the sample-size weighted mean, so it registers FedAvg's function again."""

from .base import AGGREGATORS
from .fedavg import fedavg

AGGREGATORS.register("fedprox")(fedavg)
