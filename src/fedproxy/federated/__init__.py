"""Stage 2: federated fine-tuning of the proxy (client training, server rounds)."""

from .client import ClientResult, local_train, trainable_names
from .server import FederatedServer, run_federation

__all__ = ["ClientResult", "FederatedServer", "local_train", "run_federation", "trainable_names"]
