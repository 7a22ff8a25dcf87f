"""One exception type for every user-facing failure.

The CLI prints ``str(err)`` on one line and exits 2, so messages must say what was wrong
and what to do, without a traceback.
"""


class FedProxyError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ConfigError(FedProxyError):
    """A configuration value is missing, malformed or out of range."""


class AssetError(FedProxyError):
    """A model or dataset could not be fetched, found or read."""


class DataError(FedProxyError):
    """A user's data file is missing or malformed; the message names the file and line."""


class ModelError(FedProxyError):
    """A model cannot be handled by the requested operation."""


class UpdateRejected(FedProxyError):
    """A client update failed validation and is left out of aggregation."""
