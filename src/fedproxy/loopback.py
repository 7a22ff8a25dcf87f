"""A Flower Deployment Engine on this machine: one SuperLink and one SuperNode per client on
127.0.0.1, started and stopped by PID (the commands of docs/flower.md, for tests and benchmarks)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .errors import FedProxyError


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
    raise FedProxyError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s; see the logs in the work dir")


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


class Loopback:
    """``with Loopback(workdir, node_configs) as lb: lb.run(app, run_config)``.

    ``node_configs`` holds one Flower node-config string per SuperNode, such as
    ``"partition-id=0 num-partitions=2"``; ``database``, an SQLite file for the SuperLink's
    state (default: in memory). Logs go to ``workdir/logs``; Flower's own state
    and config live under ``workdir`` (never in the user's home).
    """

    def __init__(self, workdir: Path, node_configs: list[str], database: Path | None = None) -> None:
        self.workdir, self.node_configs, self.database = Path(workdir), node_configs, database
        self.logs = self.workdir / "logs"
        self.bin = Path(sys.executable).parent
        self.env = {**os.environ, "FLWR_HOME": str(self.workdir / "flwr"), "FLWR_TELEMETRY_ENABLED": "0",
                    "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                    "PYTHONUNBUFFERED": "1"}
        self.procs: list[subprocess.Popen] = []

    def _start(self, name: str, *args: str) -> None:
        fh = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 - the process owns it until stop()
        # A session of its own, so stop() also reaches what it spawns (SuperExec, ServerApp, ClientApps).
        self.procs.append(subprocess.Popen([str(self.bin / args[0]), *args[1:]], env=self.env, stdout=fh,
                                           stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True))

    def __enter__(self) -> Loopback:
        self.logs.mkdir(parents=True, exist_ok=True)
        link = free_port()  # Flower 1.42 serves the Control, Fleet and Runtime APIs on one HTTP port
        # SuperLink state in memory (Flower's default) unless ``database`` names an SQLite file: through
        # SQLite a loopback round trip of 212 MB per node each way took 23.7 s instead of 12.4 s on 2 cores
        # (benchmarks/diagnostics/flower_transport.py, docs/experiments.md).
        db = ["--database", str(self.database)] if self.database else []
        self._start("superlink", "flower-superlink", "--insecure", "--disable-runtime-dependency-installation",
                    "--host", "127.0.0.1", "--port", str(link), *db)
        wait_port(link)
        for i, node_config in enumerate(self.node_configs):
            self._start(f"supernode{i}", "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link}",
                        "--port", str(free_port()), "--health-server-address", f"127.0.0.1:{free_port()}",
                        "--node-config", node_config)
        (self.workdir / "flwr").mkdir(exist_ok=True)
        (self.workdir / "flwr" / "config.toml").write_text(
            f'[superlink.loopback]\naddress = "127.0.0.1:{link}"\ninsecure = true\n')
        return self

    def __exit__(self, *exc) -> None:
        for p in reversed(self.procs):  # stop what we started (and its children), by process group
            _signal_group(p, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)

    def _flwr(self, *args: str, timeout: float = 120) -> dict:
        try:
            proc = subprocess.run([str(self.bin / "flwr"), *args, "--format", "json"], env=self.env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:  # a SuperLink busy moving large payloads can answer late
            return {}
        try:
            return json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise FedProxyError(f"flwr {args[0]} gave no JSON: {proc.stdout[-500:]} {proc.stderr[-500:]}") from None

    def run(self, app: Path, run_config: str, timeout: float = 600) -> dict:
        """Submit a run of ``app`` and wait until it finishes; returns ``flwr ls``'s record of it.

        ``flwr run`` exits 0 even when the run fails, so the run's final status is checked.
        """
        sub = self._flwr("run", str(app), "loopback", "--run-config", run_config, timeout=300)
        if "run-id" not in sub:
            raise FedProxyError(f"flwr run was refused: {sub.get('error-message', sub)}")
        t0 = time.time()
        while time.time() - t0 < timeout:
            runs = self._flwr("ls", "loopback", "--run-id", str(sub["run-id"])).get("runs", [])
            if runs and runs[0]["status"].startswith("finished"):
                if runs[0]["status"] != "finished:completed":
                    raise FedProxyError(f"run {sub['run-id']} ended {runs[0]['status']}\n{self.log_tail()}")
                return runs[0]
            time.sleep(2)
        raise FedProxyError(f"run {sub['run-id']} did not finish in {timeout:.0f} s\n{self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-chars:]}" for p in sorted(self.logs.iterdir()))
