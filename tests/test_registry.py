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


def test_a_recipe_that_cannot_run_is_refused_when_declared(fault_log):
    import pytest

    from fedproxy.errors import ConfigError
    from fedproxy.methods import Recipe

    fault_log.bad_input("a method recipe with contradictory parts")
    with pytest.raises(ConfigError, match="clients_get='proxyy', choose one of"):
        Recipe("typo", clients_get="proxyy")
    with pytest.raises(ConfigError, match="the adapter trains exactly when the clients get the emulator"):
        Recipe("adapter-without-emulator", clients_get="proxy", trains="adapter")
    with pytest.raises(ConfigError, match="fusion='none' exactly when the LLM itself is trained"):
        Recipe("centralized-with-plugin", clients_get="llm", trains="all", data="pooled", fusion="select")
    with pytest.raises(ConfigError, match="go together"):
        Recipe("half-zero-shot", clients_get="nothing", data="federated")
