"""Flower Deployment Engine on loopback: SuperLink + 2 SuperNodes, 2 rounds, tiny model.

Slow (process start-up dominates, ~1 min): marked ``deployment``.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedproxy import checkpoint
from tests.test_flower_app import assert_audit_clean, assert_same, in_process_params, small_cfg

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.deployment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture
def loopback(tmp_path):
    yield from start_loopback(tmp_path, ["partition-id=0 num-partitions=2", "partition-id=1 num-partitions=2"])


def start_loopback(tmp_path, node_configs):
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr"), "FLWR_TELEMETRY_ENABLED": "0",
           "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "PYTHONUNBUFFERED": "1"}
    bin_dir = Path(sys.executable).parent
    link = free_port()  # Flower 1.42 serves the Control, Fleet and Runtime APIs on one HTTP port
    procs = []
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(name, *args):
        fh = open(logs / f"{name}.log", "w")
        procs.append(subprocess.Popen([str(bin_dir / args[0]), *args[1:]], env=env, stdout=fh,
                                      stderr=subprocess.STDOUT, cwd=tmp_path))

    start("superlink", "flower-superlink", "--insecure", "--disable-runtime-dependency-installation",
          "--host", "127.0.0.1", "--port", str(link), "--database", str(tmp_path / "state.db"))
    wait_port(link)
    for i, node_config in enumerate(node_configs):
        start(f"supernode{i}", "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link}",
              "--port", str(free_port()), "--health-server-address", f"127.0.0.1:{free_port()}",
              "--node-config", node_config)
    (tmp_path / "flwr").mkdir(exist_ok=True)
    (tmp_path / "flwr" / "config.toml").write_text(
        f'[superlink.loopback]\naddress = "127.0.0.1:{link}"\ninsecure = true\n')
    try:
        yield env, bin_dir, logs
    finally:
        for p in reversed(procs):  # stop what we started, by PID
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def flwr_run(env, bin_dir, logs, app: Path, run_config: str, timeout: float = 300) -> str:
    """Submit a run, wait for it to finish, return its final status."""
    run = subprocess.run([str(bin_dir / "flwr"), "run", str(app), "loopback", "--format", "json", "--run-config",
                          run_config], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "run-id" in json.loads(run.stdout), run.stdout
    run_id = json.loads(run.stdout)["run-id"]
    status = ""
    t0 = time.time()
    while time.time() - t0 < timeout:
        ls = subprocess.run([str(bin_dir / "flwr"), "ls", "loopback", "--run-id", str(run_id), "--format", "json"],
                            env=env, capture_output=True, text=True, timeout=60)
        runs = json.loads(ls.stdout).get("runs", [])
        status = runs[0]["status"] if runs else ""
        if status.startswith("finished"):
            break
        time.sleep(2)
    diag = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(logs.iterdir()))
    assert status == "finished:completed", f"run status {status!r}\n{diag}"
    return status


def test_deployment_engine_matches_in_process(loopback, tmp_path):
    env, bin_dir, logs = loopback
    out = tmp_path / "flower_out"
    overrides = "data.num_clients=2;fed.rounds=2;fed.local_steps=2"
    flwr_run(env, bin_dir, logs, ROOT, f'fedproxy-config="tiny" out-dir="{out}" overrides="{overrides}"')
    result = checkpoint.load(out / "flower_result.pt")
    assert result is not None and len(result["history"]) == 2
    assert_same(result["params"], in_process_params(small_cfg(2), tmp_path))
    # Privacy/IP: every message of the run, as it crossed the wire, carries only what it may.
    assert_audit_clean(out, small_cfg(2), tmp_path)


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


@pytest.fixture
def loopback_with_silent_node(tmp_path):
    yield from start_loopback(tmp_path, ["partition-id=0 num-partitions=2",
                                         "partition-id=1 num-partitions=2 hang=1"])


def test_silent_supernode_is_left_out_after_the_round_timeout(loopback_with_silent_node, tmp_path, fault_log):
    env, bin_dir, logs = loopback_with_silent_node
    app = tmp_path / "hanging_app"
    app.mkdir()
    (app / "hanging.py").write_text(HANGING_APP)
    (app / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text().replace(
        "fedproxy.flower_app:server_app", "hanging:server_app").replace(
        "fedproxy.flower_app:client_app", "hanging:client_app"))
    out = tmp_path / "flower_out"
    overrides = "data.num_clients=2;fed.rounds=2;fed.local_steps=2;fed.round_timeout=25"
    flwr_run(env, bin_dir, logs, app, f'fedproxy-config="tiny" out-dir="{out}" overrides="{overrides}"')
    result = checkpoint.load(out / "flower_result.pt")
    history = result["history"]
    assert [r["clients"] for r in history] == [[0], [0]]  # every round finished without the silent node
    assert [r["missing"] for r in history] == [[1], [1]]
    fault_log.record("silent SuperNode (never answers a training message)", survived=True,
                     rounds_lost=2 - len(history))
