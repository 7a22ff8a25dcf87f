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
