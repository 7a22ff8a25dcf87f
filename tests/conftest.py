import os

import pytest
import torch

from fedproxy.config import load_config


@pytest.fixture(autouse=True, scope="session")
def _offline_env(tmp_path_factory):
    # Tests never touch the network or the user's home: Flower, HF and our cache point at temp dirs.
    home = tmp_path_factory.mktemp("home")
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "FLWR_TELEMETRY_ENABLED": "0",
                       "FLWR_DISABLE_UPDATE_CHECK": "1", "RAY_USAGE_STATS_ENABLED": "0",
                       "FLWR_HOME": str(home / "flwr"), "FEDPROXY_CACHE": str(home / "cache")})
    torch.set_num_threads(2)


@pytest.fixture
def tiny_cfg():
    return load_config("tiny")


@pytest.fixture
def tiny_ctx(tiny_cfg, tmp_path):
    from fedproxy.context import build_context

    return build_context(tiny_cfg, tmp_path, progress=False)


def benchmark_script(name: str):
    """A script of ``benchmarks/`` (not a package) loaded as a module, e.g. ``benchmark_script("seeds")``."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    if str(path.parent) not in sys.path:  # as when run as a script: the scripts import each other
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"{name}_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tiny_llama(layers=4, hidden=32, vocab=64, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


# ---- fault / bad-input accounting (issue: "a fault suite that counts what it tried") ----------
# A test that takes the ``fault_log`` fixture names what it tries (``fault_log.record`` for an
# injected fault, ``fault_log.bad_input`` for a bad input); whether each case survived or was
# rejected with a clear error is the test's outcome, read from pytest's report, so a failing
# case shows as a failure in the printed line. A fault test that fails before naming its case
# is counted too, as a failed case of unknown kind.
class FaultLog:
    def __init__(self, entries: list[dict], test: str) -> None:
        self.entries, self.test = entries, test

    def record(self, what: str, *, rounds_lost: int = 0) -> None:
        """A fault injected into a run (crash, silent node, attack, restart, corruption)."""
        self.entries.append({"kind": "fault", "what": what, "rounds_lost": rounds_lost, "test": self.test})

    def bad_input(self, what: str) -> None:
        """A bad input given to the CLI, config or API, which must get a specific error."""
        self.entries.append({"kind": "bad_input", "what": what, "test": self.test})


_FAULTS: list[dict] = []


@pytest.fixture
def fault_log(request) -> FaultLog:
    return FaultLog(_FAULTS, request.node.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if "fault_log" in getattr(item, "fixturenames", ()) and (report.when == "call" or report.failed):
        mine = [e for e in _FAULTS if e["test"] == item.nodeid]
        if not mine and report.failed:
            _FAULTS.append(mine := {"kind": "unknown", "what": item.nodeid, "test": item.nodeid, "rounds_lost": 0})
            mine = [mine]
        for e in mine:
            e["passed"] = bool(report.passed) and e.get("passed", True)
    return report


def fault_summary(entries: list[dict]) -> dict:
    faults = [e for e in entries if e["kind"] == "fault"]
    inputs = [e for e in entries if e["kind"] == "bad_input"]
    return {"bad_inputs_tried": len(inputs), "bad_inputs_with_clear_error": sum(e.get("passed", False) for e in inputs),
            "faults_injected": len(faults), "faults_survived": sum(e.get("passed", False) for e in faults),
            "rounds_lost": sum(e.get("rounds_lost", 0) for e in faults),
            "failed_cases": sum(not e.get("passed", False) for e in entries), "entries": entries}


def pytest_terminal_summary(terminalreporter):
    if not _FAULTS:
        return
    s = fault_summary(_FAULTS)
    terminalreporter.write_line(
        f"fault suite: {s['bad_inputs_tried']} bad inputs tried, {s['bad_inputs_with_clear_error']} rejected with a "
        f"clear error; {s['faults_injected']} faults injected, {s['faults_survived']} survived, "
        f"rounds lost {s['rounds_lost']}" + (f"; {s['failed_cases']} FAILED" if s["failed_cases"] else ""))
    if path := os.environ.get("FEDPROXY_FAULT_REPORT"):
        import json

        with open(path, "w") as fh:
            json.dump(s, fh, indent=2)


ARCHITECTURES = ("llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3_text")


def tiny_arch_model(kind: str, init: float | None = None):
    """A tiny random causal LM of a supported architecture (vocabulary 64, 3 blocks); the Gemmas with a
    sliding window of 8 tokens, so that test sequences outrun it. ``init``: the weights' init std (a wide
    one makes greedy continuations differ by row)."""
    import transformers as tf

    common = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128)
    if init is not None:
        common["initializer_range"] = init
    configs = {
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, {}),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM, {}),
        "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM, {"head_dim": 8}),
        "mistral": (tf.MistralConfig, tf.MistralForCausalLM, {}),
        "gemma2": (tf.Gemma2Config, tf.Gemma2ForCausalLM, {"head_dim": 8, "sliding_window": 8}),
        "gemma3_text": (tf.Gemma3TextConfig, tf.Gemma3ForCausalLM, {"head_dim": 8, "sliding_window": 8}),
    }
    config_cls, model_cls, extra = configs[kind]
    torch.manual_seed(0)
    return model_cls(config_cls(**common, **extra)).eval()
