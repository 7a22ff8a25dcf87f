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
    for pid in range(2):
        start(f"supernode{pid}", "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link}",
              "--port", str(free_port()), "--health-server-address", f"127.0.0.1:{free_port()}",
              "--node-config", f"partition-id={pid} num-partitions=2")
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


def test_deployment_engine_matches_in_process(loopback, tmp_path):
    env, bin_dir, logs = loopback
    out = tmp_path / "flower_out"
    overrides = "data.num_clients=2;fed.rounds=2;fed.local_steps=2"
    run = subprocess.run(
        [str(bin_dir / "flwr"), "run", str(ROOT), "loopback", "--format", "json", "--run-config",
         f'fedproxy-config="tiny" out-dir="{out}" overrides="{overrides}"'],
        env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    run_id = json.loads(run.stdout)["run-id"]
    status = ""
    t0 = time.time()
    while time.time() - t0 < 300:
        ls = subprocess.run([str(bin_dir / "flwr"), "ls", "loopback", "--run-id", str(run_id), "--format", "json"],
                            env=env, capture_output=True, text=True, timeout=60)
        runs = json.loads(ls.stdout).get("runs", [])
        status = runs[0]["status"] if runs else ""
        if status.startswith("finished"):
            break
        time.sleep(2)
    diag = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(logs.iterdir()))
    assert status == "finished:completed", f"run status {status!r}\n{diag}"
    result = checkpoint.load(out / "flower_result.pt")
    assert result is not None and len(result["history"]) == 2
    assert_same(result["params"], in_process_params(small_cfg(2), tmp_path))
    # Privacy/IP: every message of the run, as it crossed the wire, carries only what it may.
    assert_audit_clean(out, small_cfg(2), tmp_path)
