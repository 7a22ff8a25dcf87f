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


def tiny_llama(layers=4, hidden=32, vocab=64, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


# ---- fault / bad-input accounting (issue: "a fault suite that counts what it tried") ----------
# Tests call fault_log.record(...) only after their assertions passed, so the summary counts
# verified outcomes; pytest prints it at the end and writes it to $FEDPROXY_FAULT_REPORT if set.
class FaultLog:
    def __init__(self, entries: list[dict], test: str) -> None:
        self.entries, self.test = entries, test

    def record(self, what: str, *, survived: bool, rounds_lost: int = 0) -> None:
        """A fault injected into a run (crash, silent node, attack, restart, corruption)."""
        self.entries.append({"kind": "fault", "what": what, "survived": survived, "rounds_lost": rounds_lost,
                             "test": self.test})

    def bad_input(self, what: str, *, clear_error: bool) -> None:
        """A bad input given to the CLI, config or API, and whether it got a specific error."""
        self.entries.append({"kind": "bad_input", "what": what, "clear_error": clear_error, "test": self.test})


_FAULTS: list[dict] = []


@pytest.fixture
def fault_log(request) -> FaultLog:
    return FaultLog(_FAULTS, request.node.nodeid)


def fault_summary(entries: list[dict]) -> dict:
    faults = [e for e in entries if e["kind"] == "fault"]
    inputs = [e for e in entries if e["kind"] == "bad_input"]
    return {"bad_inputs_tried": len(inputs), "bad_inputs_with_clear_error": sum(e["clear_error"] for e in inputs),
            "faults_injected": len(faults), "faults_survived": sum(e["survived"] for e in faults),
            "rounds_lost": sum(e["rounds_lost"] for e in faults), "entries": entries}


def pytest_terminal_summary(terminalreporter):
    if not _FAULTS:
        return
    s = fault_summary(_FAULTS)
    terminalreporter.write_line(
        f"fault suite: {s['bad_inputs_tried']} bad inputs tried, {s['bad_inputs_with_clear_error']} rejected with a "
        f"clear error; {s['faults_injected']} faults injected, {s['faults_survived']} survived, "
        f"rounds lost {s['rounds_lost']}")
    if path := os.environ.get("FEDPROXY_FAULT_REPORT"):
        import json

        with open(path, "w") as fh:
            json.dump(s, fh, indent=2)
