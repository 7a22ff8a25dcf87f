"""Flower Deployment Engine on loopback: SuperLink + 2 SuperNodes, 2 rounds, tiny model
(plain, with SecAgg+, with a SuperNode that never answers, and over TLS with authenticated
SuperNodes that each bring their own data folder).

Slow (process start-up dominates, ~1 min): marked ``deployment``.
"""

import json
from pathlib import Path

import pytest

from fedproxy import checkpoint
from fedproxy.loopback import Loopback
from tests.data.test_local import make_dataset
from tests.test_flower_app import assert_audit_clean, assert_same, in_process_params, small_cfg

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.deployment


def test_deployment_engine_matches_in_process(tmp_path):
    out = tmp_path / "flower_out"
    overrides = "data.num_clients=2;fed.rounds=2;fed.local_steps=2"
    secure_out = tmp_path / "flower_secagg"
    secure = ";fed.aggregator=fedavg;fed.secagg=true"
    nodes = [f"partition-id={i} num-partitions=2 threads=1" for i in range(2)]  # two nodes share the cores
    with Loopback(tmp_path, nodes) as lb:
        lb.run(ROOT, f'fedproxy-config="tiny" out-dir="{out}" overrides="{overrides}"')
        lb.run(ROOT, f'fedproxy-config="tiny" out-dir="{secure_out}" overrides="{overrides}{secure}"')
    result = checkpoint.load(out / "flower_result.pt")
    assert result is not None and len(result["history"]) == 2
    assert_same(result["params"], in_process_params(small_cfg(2), tmp_path))
    # Privacy/IP: every message of the run, as it crossed the wire, carries only what it may.
    assert_audit_clean(out, small_cfg(2), tmp_path)
    # The same over SecAgg+: plain FedAvg's result up to quantization, and no readable update.
    secure_cfg = small_cfg(2).with_overrides(["fed.aggregator=fedavg", "fed.secagg=true"])
    result = checkpoint.load(secure_out / "flower_result.pt")
    assert all(r["secure_aggregation"] and r["clients"] == [0, 1] for r in result["history"])
    assert_same(result["params"], in_process_params(secure_cfg.with_overrides(["fed.secagg=false"]), tmp_path),
                atol=1e-4)
    assert_audit_clean(secure_out, secure_cfg, tmp_path)


# A ClientApp that answers the server's query but never its training messages on nodes whose
# node config says hang=1: a SuperNode that is connected and silent.
HANGING_APP = """
import os
import time

from flwr.clientapp import ClientApp

from fedproxy.flower_app import client_app as fedproxy_client
from fedproxy.flower_app import server_app as fedproxy_server

server_app = fedproxy_server
client_app = ClientApp()


@client_app.query()
def query(msg, context):
    return fedproxy_client(msg, context)


@client_app.train()
def train(msg, context):
    if int(context.node_config.get("hang", 0)):
        parent = os.getppid()
        while os.getppid() == parent:  # silent until the SuperNode that started us is stopped
            time.sleep(1)
    return fedproxy_client(msg, context)
"""


def test_silent_supernode_is_left_out_after_the_round_timeout(tmp_path, fault_log):
    app = tmp_path / "hanging_app"
    app.mkdir()
    (app / "hanging.py").write_text(HANGING_APP)
    (app / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text().replace(
        "fedproxy.flower_app:server_app", "hanging:server_app").replace(
        "fedproxy.flower_app:client_app", "hanging:client_app"))
    out = tmp_path / "flower_out"
    overrides = "data.num_clients=2;fed.rounds=2;fed.local_steps=2;fed.round_timeout=25"
    with Loopback(tmp_path, ["partition-id=0 num-partitions=2", "partition-id=1 num-partitions=2 hang=1"]) as lb:
        lb.run(app, f'fedproxy-config="tiny" out-dir="{out}" overrides="{overrides}"')
    result = checkpoint.load(out / "flower_result.pt")
    history = result["history"]
    assert [r["clients"] for r in history] == [[0], [0]]  # every round finished without the silent node
    assert [r["missing"] for r in history] == [[1], [1]]
    fault_log.record("silent SuperNode (never answers a training message)",
                     rounds_lost=2 - len(history))


def test_tls_authenticated_supernodes_with_their_own_folders_match_fedproxy_run(tmp_path, fault_log):
    """A federation as a hospital or a bank runs it: TLS, only registered SuperNodes, each reading only
    its own folder (node config data-dir) and the server only server/; same result as in-process."""
    root = make_dataset(tmp_path / "shop")
    (root / "labels.json").write_text('["neg", "pos"]')
    out = tmp_path / "flower_out"
    overrides = f"data.dir={root};data.num_clients=2;fed.rounds=2;fed.local_steps=2"
    # Started in the other order than their names sort: the client index follows the folder's name.
    nodes = [f'data-dir="{root / "clients" / name}" threads=1' for name in ("beta", "alpha")]
    with Loopback(tmp_path / "deploy", nodes, secure=True) as lb:
        intruder = lb.start_node("partition-id=0", register=False, extra=("--max-retries", "2"))
        refused = intruder.wait(timeout=120)
        lb.run(ROOT, f'fedproxy-config="tiny" out-dir="{out}" overrides="{overrides}"')
        online = lb.online_nodes()
    link_log = (tmp_path / "deploy" / "logs" / "superlink.log").read_text()
    assert refused != 0 and "No SuperNode found with the given public key" in link_log
    assert online == 2  # the two registered SuperNodes; the unknown key never joined
    fault_log.record("SuperNode with an unregistered key", rounds_lost=0)
    cfg = small_cfg(2).with_overrides([f"data.dir={root}"])
    result = checkpoint.load(out / "flower_result.pt")
    assert_same(result["params"], in_process_params(cfg, tmp_path))
    report = json.loads((out / "report.json").read_text())
    assert report["federation"]["client_names"] == ["alpha", "beta"]
    assert "Clients: alpha, beta." in (out / "report.md").read_text()
    assert (out / "fused_llm" / "fusion_recipe.json").is_file()
    assert_audit_clean(out, cfg, tmp_path)
