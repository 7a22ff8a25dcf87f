import pytest

from fedproxy.errors import ConfigError
from fedproxy.registry import Registry


def test_duplicate_name_is_refused():
    reg = Registry("thing")
    reg.register("a")(object())
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(object())


def test_unknown_name_lists_choices():
    reg = Registry("thing")
    reg.register("alpha")(1)
    with pytest.raises(ConfigError, match="unknown thing 'beta'; choose one of: alpha"):
        reg.get("beta")


def test_all_aggregators_and_methods_registered():
    from fedproxy import baselines  # noqa: F401
    from fedproxy.aggregate import AGGREGATORS
    from fedproxy.compress import SELECTORS
    from fedproxy.methods import METHODS

    assert {"fedavg", "fedavgm", "fedexp", "ties", "dare", "median", "normclip", "agreement", "h-ties"} <= set(
        AGGREGATORS.names())
    assert {"uniform", "block-influence", "loss-drop"} <= set(SELECTORS.names())
    assert {"zero-shot", "fedproxy", "naive-plugin", "offsite-tuning", "offsite-tuning-raw", "fedavg-lora",
            "centralized", "proxy-centralized", "centralized-kept"} <= set(METHODS.names())
