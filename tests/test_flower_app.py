"""The Flower app computes what the in-process path computes, for the same seed."""

import json

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


def node_context(node_config=None, state=None):
    """A SuperNode's Flower context, as the ClientApp gets it (partition 0 unless told)."""
    from flwr.app import Context, RecordDict

    return Context(run_id=1, node_id=7, node_config=node_config or {"partition-id": 0},
                   state=RecordDict() if state is None else state, run_config={})


def assert_same(a, b, atol=1e-5):
    assert set(a) == set(b)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol), (k, float((a[k] - b[k]).abs().max()))


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
    proxy_bytes = sum(p.numel() * 4 for p in comp.proxy.parameters())
    wire16 = cfg.fed.wire_dtype == "float16"
    if not cfg.fed.secagg and not any(e.get("error") for e in audit):
        # The frozen tensors reach a node at most once (not at all if an earlier run left them in
        # its cache); later rounds load them from the node's cache.
        frozen_to = [e["node"] for e in audit if e["direction"] == "server->client" and "frozen" in e["content"]]
        trained = {e["node"] for e in audit if e.get("type") == "train"}
        assert len(frozen_to) == len(set(frozen_to)) and set(frozen_to) <= trained, (frozen_to, trained)
    for entry in audit:
        content = entry["content"]
        if entry["direction"] == "server->client":
            arrays = [k for rec in content.values() if rec["type"] == "arrays" for k in rec["keys"]]
            sent = sum(rec["bytes"] for rec in content.values() if rec["type"] == "arrays")
            if "fitins.parameters" in content:  # SecAgg+'s legacy layout numbers the proxy's tensors
                assert len(arrays) <= len(proxy_keys) and sent <= proxy_bytes + 256 * len(arrays)  # + npy headers
                continue
            assert set(arrays) <= proxy_keys, set(arrays) - proxy_keys
            if arrays:  # SecAgg+ key-exchange messages carry no arrays
                sent_blocks = {p[1] for k in arrays if (p := split_block_key(k))}
                assert len(sent_blocks) == len(comp.pmap.keep) < ctx.llm.config.num_hidden_layers
                assert sent < llm_bytes
        elif entry["error"]:
            assert content == {}
        elif cfg.fed.secagg:  # masked vectors and keys (config records), scalar metrics, no plain arrays
            assert set(content) <= SECAGG_REPLY, set(content) - SECAGG_REPLY
            assert all(rec.get("bytes", 0) == 0 for rec in content.values() if rec["type"] == "arrays")
        else:
            assert set(content) == {"arrays", "metrics", "info"} | ({"scales"} if wire16 else set())
            assert set(content["arrays"]["keys"]) <= trainable
            assert all(dt.startswith("float") for dt in content["arrays"]["dtypes"])  # no token ids
            if wire16:  # half the bytes: float16 values, one scale per tensor
                assert content["arrays"]["dtypes"] == ["float16"]
                assert content["scales"]["keys"] == content["arrays"]["keys"]
            assert set(content["info"]["keys"]) == {"kind", "partition-id"}  # no text


SECAGG_REPLY = {"secaggplus_configs", "fitres.metrics", "fitres.num_examples", "fitres.parameters", "fitres.status"}


def run_sim(cfg, out, num_supernodes):
    from flwr.simulation import run_simulation

    from fedproxy.flower_app import client_app, make_server_app

    run_simulation(server_app=make_server_app(cfg, out), client_app=client_app, num_supernodes=num_supernodes,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2, "include_dashboard": False}})
    result = checkpoint.load(out / "flower_result.pt")
    assert result is not None, "the ServerApp did not finish"
    return result


def test_tokenizer_survives_the_wire(tiny_ctx):
    tok = tokenizer_from_payload(tokenizer_payload(tiny_ctx.tokenizer))
    text = tiny_ctx.bench.train[0][0].text
    assert tok(text)["input_ids"] == tiny_ctx.tokenizer(text)["input_ids"]


def test_simulation_engine_matches_in_process(tmp_path):
    cfg = small_cfg(2)
    result = run_sim(cfg, tmp_path / "sim", 2)
    assert len(result["history"]) == 2
    assert_same(result["params"], in_process_params(cfg, tmp_path))
    assert_audit_clean(tmp_path / "sim", cfg, tmp_path)
    # the stand-alone ServerApp runs all three stages: a fused checkpoint, its recipe and a report
    import json

    report = json.loads((tmp_path / "sim" / "report.json").read_text())
    recipe = json.loads((tmp_path / "sim" / "fused_llm" / "fusion_recipe.json").read_text())
    assert recipe["decision"]["shipped"] in ("plug-in", "unchanged LLM") and report["fusion"]["scale"] == recipe["scale"]
    assert (tmp_path / "sim" / "fused_llm" / "config.json").is_file()
    assert report["federation"]["rounds"] == 2 and len(report["federation"]["round_checks"]) == 2
    assert "shipped" in (tmp_path / "sim" / "report.md").read_text()
    # the round-time breakdown of benchmarks/perf.py: delivery before the handler, the handler around training
    for rec in result["history"]:
        for m in rec["client_metrics"].values():
            assert 0 <= m["queue_seconds"] < rec["round_seconds"]
            assert m["handler_seconds"] >= m["train_seconds"] > 0
            assert m["unpack_seconds"] >= 0 and m["setup_seconds"] >= 0
            assert m["unpack_seconds"] + m["setup_seconds"] + m["train_seconds"] <= m["handler_seconds"]


def test_stateful_clients_in_the_simulation_engine_match_in_process(tmp_path):
    # Round 2 continues each client's AdamW only if the node's context survived between messages.
    cfg = small_cfg(2).with_overrides(["fed.keep_optimizer_state=true"])
    kept = in_process_params(cfg, tmp_path)
    assert_same(run_sim(cfg, tmp_path / "sim", 2)["params"], kept)
    restarted = in_process_params(small_cfg(2), tmp_path / "fresh")
    assert any(not torch.allclose(kept[k], restarted[k], atol=1e-5) for k in kept)  # the option matters


def test_secagg_plus_in_the_simulation_engine_equals_fedavg_and_hides_updates(tmp_path):
    """`fedproxy run` with fed.engine=simulation and SecAgg+: the server sees only the weighted
    mean, and the federated proxy equals plain in-process FedAvg up to SecAgg+'s quantization."""
    from fedproxy.compress import load_proxy
    from fedproxy.modeling import snapshot
    from fedproxy.pipeline import run

    base = small_cfg(3).with_overrides(['methods=["fedproxy"]', "fed.aggregator=fedavg", "fuse.scales=[1.0]"])
    secure = base.with_overrides(["fed.engine=simulation", "fed.secagg=true"])
    run(secure, tmp_path / "secure", progress=False)
    run(base, tmp_path / "plain", progress=False)
    rounds = json.loads((tmp_path / "secure" / "results" / "fedproxy.json").read_text())["federation"]
    assert rounds["rounds"] == 2 and rounds["bytes_up_per_client_per_round"] > 0
    tuned = {name: snapshot(load_proxy(tmp_path / name / "work" / "fedproxy" / "proxy_tuned")[0])
             for name in ("secure", "plain")}
    base_proxy = snapshot(load_proxy(tmp_path / "plain" / "work" / "fedproxy" / "proxy")[0])
    assert any(not torch.allclose(tuned["plain"][k], base_proxy[k], atol=1e-3) for k in base_proxy)  # it trained
    assert_same(tuned["secure"], tuned["plain"], atol=1e-4)  # SecAgg+ quantizes stochastically
    # As on the plain path, the frozen proxy tensors reach each node once, then come from its cache.
    audit = json.loads((tmp_path / "secure" / "work" / "fedproxy" / "flower" / "message_audit.json").read_text())
    fit = [(e["node"], len(e["content"]["fitins.parameters"]["keys"])) for e in audit
           if e["direction"] == "server->client" and "fitins.parameters" in e["content"]]
    with_frozen = [node for node, n in fit if n == max(n for _, n in fit)]
    assert len(fit) == 6 and len(with_frozen) == 3 == len(set(with_frozen))  # 3 nodes x 2 rounds
    assert len({n for _, n in fit}) == 2 and min(n for _, n in fit) > 0  # later rounds: trainable tensors only
    assert rounds["secure_aggregation"] and rounds["round_clients"] == [[0, 1, 2], [0, 1, 2]]
    assert_audit_clean(tmp_path / "secure" / "work" / "fedproxy" / "flower", secure, tmp_path)


def test_client_refuses_a_proxy_the_server_sent_incompletely(tiny_ctx, fault_log):
    import pytest

    from fedproxy.errors import ModelError
    from fedproxy.flower_app import local_update

    proxy = tiny_ctx.llm
    names = trainable_names(proxy, tiny_ctx.cfg.fed)
    params = snapshot(proxy)
    frozen = {k: v for k, v in params.items() if k not in names}
    conf = {"run-config": json.dumps(tiny_ctx.cfg.to_flat()), "round": 1,
            "tokenizer": tokenizer_payload(tiny_ctx.tokenizer), "proxy-config": json.dumps(proxy.config.to_dict())}
    # Weights are not randomly initialised on the client, so a missing tensor must be an error, not noise.
    missing = sorted(frozen)[0]
    with pytest.raises(ModelError, match="sent no values for 1 proxy tensors"):
        local_update(conf, {n: params[n] for n in names}, {k: v for k, v in frozen.items() if k != missing},
                     node_context())
    fault_log.bad_input("server message without a frozen proxy tensor")
    _, res, pid = local_update(conf, {n: params[n] for n in names}, frozen, node_context())
    assert pid == 0
    assert set(res.update) == set(names) and all(torch.isfinite(v).all() for v in res.update.values())


def test_node_config_threads_sets_torch_threads_and_rejects_bad_values(fault_log):
    import pytest

    from fedproxy.errors import ConfigError
    from fedproxy.flower_app import node_threads

    before = torch.get_num_threads()
    try:
        node_threads({"threads": 1})
        assert torch.get_num_threads() == 1
        node_threads({})  # unset: left as it is
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    for bad in ("two", -1):
        with pytest.raises(ConfigError, match="node config threads=.*non-negative integer"):
            node_threads({"threads": bad})
    fault_log.bad_input("SuperNode with node config threads='two' or -1")


def test_client_keeps_its_optimizer_state_in_the_node_context(tiny_ctx):
    from flwr.app import RecordDict

    from fedproxy.flower_app import OPT_STATE, local_update

    proxy = tiny_ctx.llm
    cfg = tiny_ctx.cfg.with_overrides(["fed.keep_optimizer_state=true", "fed.local_steps=2"])
    names = trainable_names(proxy, cfg.fed)
    params = snapshot(proxy)
    frozen = {k: v for k, v in params.items() if k not in names}
    state = RecordDict()
    for server_round in (1, 2):
        conf = {"run-config": json.dumps(cfg.to_flat()), "round": server_round,
                "tokenizer": tokenizer_payload(tiny_ctx.tokenizer), "proxy-config": json.dumps(proxy.config.to_dict())}
        local_update(conf, {n: params[n] for n in names}, frozen, node_context(state=state))
        steps = {float(v) for k, v in state[OPT_STATE].to_torch_state_dict().items() if k.endswith("::step")}
        assert steps == {2.0 * server_round}  # the second round continued the first round's AdamW


def test_a_node_with_its_own_folder_trains_on_it_under_the_index_the_server_gave(tmp_path):
    """Node config data-dir: the client reads only its folder, with the server's task, and trains
    as the client index the server gave its name (the in-process order: sorted names)."""
    from fedproxy.flower_app import local_update
    from tests.data.test_local import make_dataset

    root = make_dataset(tmp_path / "shop", n=5)
    cfg = small_cfg(2).with_overrides([f"data.dir={root}"])
    ctx = build_context(cfg, tmp_path / "server", progress=False, server_only=True)
    names = trainable_names(ctx.llm, cfg.fed)
    params = snapshot(ctx.llm)
    conf = {"run-config": json.dumps(cfg.to_flat()), "round": 1, "tokenizer": tokenizer_payload(ctx.tokenizer),
            "proxy-config": json.dumps(ctx.llm.config.to_dict()), "task": json.dumps(ctx.bench.task_spec()),
            "partition-ids": json.dumps({"7": 1, "8": 0})}
    (root / "clients" / "alpha" / "train.jsonl").write_text("{not json\n")  # another node's file: never read
    node = node_context({"data-dir": str(root / "clients" / "beta")})
    _, res, pid = local_update(conf, {n: params[n] for n in names},
                               {k: v for k, v in params.items() if k not in names}, node)
    assert pid == 1 and res.metrics["truncated"] == 0 and set(res.update) == set(names)


def test_the_clientapp_module_keeps_server_only_and_model_imports_off_its_path():
    """Every Deployment message starts a fresh ClientApp process that imports fedproxy.flower_app
    (benchmarks/perf.py's Flower floor): scipy (the server's paired tests) and transformers (loaded
    when the client builds its model) must not be imported by the module itself."""
    import subprocess
    import sys

    code = "import sys, fedproxy.flower_app; print(sorted(m for m in ('scipy', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
