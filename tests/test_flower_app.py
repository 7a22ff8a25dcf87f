"""The Flower app computes what the in-process path computes, for the same seed."""


import torch

from fedproxy import checkpoint
from fedproxy.compress import compress
from fedproxy.config import load_config
from fedproxy.context import build_context
from fedproxy.federated import run_federation, trainable_names
from fedproxy.flower_app import tokenizer_from_payload, tokenizer_payload
from fedproxy.modeling import snapshot


def small_cfg(clients=2):
    cfg = load_config("tiny").with_overrides([f"data.num_clients={clients}", "fed.rounds=2", "fed.local_steps=2"])
    return cfg


def in_process_params(cfg, tmp_path):
    ctx = build_context(cfg, tmp_path / "inproc", progress=False)
    comp = compress(ctx.llm, ctx.server_text_batches(cfg.compress.distill_batch), cfg.compress, ctx.device,
                    cfg.seed, ctx.bf16, progress=False)
    names = trainable_names(comp.proxy, cfg.fed)
    server = run_federation(comp.proxy, snapshot(comp.proxy, names), ctx.bench.train, ctx.encoder, cfg.fed,
                            ctx.device, cfg.seed, progress=False)
    return server.params


def assert_same(a, b):
    assert set(a) == set(b)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def assert_audit_clean(out_dir, cfg, tmp_path):
    """Clients receive only proxy tensors; the server receives only updates and scalar metrics."""
    import json

    from fedproxy.compress.base import split_block_key

    audit = json.loads((out_dir / "message_audit.json").read_text())
    assert audit, "no messages were audited"
    ctx = build_context(cfg, tmp_path / "audit", progress=False)
    comp = compress(ctx.llm, ctx.server_text_batches(cfg.compress.distill_batch), cfg.compress, ctx.device,
                    cfg.seed, ctx.bf16, progress=False)
    proxy_keys = set(comp.proxy.state_dict())
    trainable = set(trainable_names(comp.proxy, cfg.fed))
    llm_bytes = sum(p.numel() * 4 for p in ctx.llm.parameters())
    for entry in audit:
        content = entry["content"]
        if entry["direction"] == "server->client":
            arrays = [k for rec in content.values() if rec["type"] == "arrays" for k in rec["keys"]]
            assert set(arrays) <= proxy_keys, set(arrays) - proxy_keys
            sent_blocks = {p[1] for k in arrays if (p := split_block_key(k))}
            assert len(sent_blocks) == len(comp.pmap.keep) < ctx.llm.config.num_hidden_layers
            assert sum(rec.get("bytes", 0) for rec in content.values()) < llm_bytes
        else:
            assert set(content) == {"arrays", "metrics", "info"}
            assert set(content["arrays"]["keys"]) <= trainable
            assert all(dt.startswith("float") for dt in content["arrays"]["dtypes"])  # no token ids
            assert set(content["info"]["keys"]) == {"kind", "partition-id"}  # no text


def test_tokenizer_survives_the_wire(tiny_ctx):
    tok = tokenizer_from_payload(tokenizer_payload(tiny_ctx.tokenizer))
    text = tiny_ctx.bench.train[0][0].text
    assert tok(text)["input_ids"] == tiny_ctx.tokenizer(text)["input_ids"]


def test_simulation_engine_matches_in_process(tmp_path):
    from flwr.simulation import run_simulation

    from fedproxy.flower_app import client_app, make_server_app

    cfg = small_cfg(2)
    run_simulation(server_app=make_server_app(cfg, tmp_path / "sim"), client_app=client_app, num_supernodes=2,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2, "include_dashboard": False}})
    result = checkpoint.load(tmp_path / "sim" / "flower_result.pt")
    assert result is not None, "the ServerApp did not finish"
    assert len(result["history"]) == 2
    assert_same(result["params"], in_process_params(cfg, tmp_path))
    assert_audit_clean(tmp_path / "sim", cfg, tmp_path)
