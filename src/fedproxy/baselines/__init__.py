"""Baselines evaluated with the same data, budget and metric as FedProxy.

Importing this package registers them in :data:`fedproxy.methods.METHODS`.
"""

from . import centralized, fedavg_lora, offsite_tuning, zero_shot  # noqa: F401
