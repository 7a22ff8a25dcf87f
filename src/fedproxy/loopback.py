"""A Flower Deployment Engine on this machine: one SuperLink and one SuperNode per client on
127.0.0.1, started and stopped by PID (the commands of docs/flower.md, for tests and benchmarks).

With ``secure=True`` it runs as a real federation does: TLS on every link (a certificate
authority and a server certificate made for the occasion) and CLI-managed SuperNode
authentication (only SuperNodes whose public key was registered with ``flwr supernode register``
may join).
"""

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


def make_credentials(folder: Path, host: str = "127.0.0.1") -> dict[str, Path]:
    """A throwaway certificate authority and a TLS certificate for ``host`` in ``folder`` (for
    loopback tests and demos; a real federation uses its organisation's certificates, docs/flower.md).

    Returns the paths: ``ca`` (what SuperNodes and the CLI trust), ``cert`` and ``key`` (the SuperLink's).
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject: str, key, issuer: str, issuer_key, *extensions):
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2)))
        for ext, critical in extensions:
            builder = builder.add_extension(ext, critical=critical)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    ca = cert("fedproxy loopback CA", ca_key, "fedproxy loopback CA", ca_key,
              (x509.BasicConstraints(ca=True, path_length=None), True))
    try:
        names = [x509.IPAddress(ipaddress.ip_address(host))]
    except ValueError:
        names = [x509.DNSName(host)]
    server = cert(host, key, "fedproxy loopback CA", ca_key, (x509.SubjectAlternativeName(names), False))
    paths = {"ca": folder / "ca.crt", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return paths


def make_node_key(path: Path) -> Path:
    """A SuperNode's authentication key pair: ``path`` (private, OpenSSH) and ``path.pub`` (what
    ``flwr supernode register`` takes), on NIST P-384 as Flower requires; returns the public key's path."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    public = path.with_name(path.name + ".pub")
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH))
    return public


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


class Loopback:
    """``with Loopback(workdir, node_configs) as lb: lb.run(app, run_config)``.

    ``node_configs`` holds one Flower node-config string per SuperNode, such as
    ``"partition-id=0 num-partitions=2"``; ``database``, an SQLite file for the SuperLink's
    state (default: in memory). ``secure``: TLS and SuperNode authentication, each of these
    SuperNodes with a key of its own registered before it starts (:meth:`start_node` adds
    more, registered or not). Logs go to ``workdir/logs``; Flower's own state and config live
    under ``workdir`` (never in the user's home).
    """

    def __init__(self, workdir: Path, node_configs: list[str], database: Path | None = None,
                 secure: bool = False) -> None:
        self.workdir, self.node_configs, self.database = Path(workdir), node_configs, database
        self.secure = secure
        self.logs = self.workdir / "logs"
        self.bin = Path(sys.executable).parent
        self.env = {**os.environ, "FLWR_HOME": str(self.workdir / "flwr"), "FLWR_TELEMETRY_ENABLED": "0",
                    "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                    "PYTHONUNBUFFERED": "1"}
        self.procs: list[subprocess.Popen] = []
        self.link = 0
        self.tls: dict[str, Path] = {}

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        fh = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 - the process owns it until stop()
        # A session of its own, so stop() also reaches what it spawns (SuperExec, ServerApp, ClientApps).
        proc = subprocess.Popen([str(self.bin / args[0]), *args[1:]], env=self.env, stdout=fh,
                                stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True)
        self.procs.append(proc)
        return proc

    def __enter__(self) -> Loopback:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.link = free_port()  # Flower 1.42 serves the Control, Fleet and Runtime APIs on one HTTP port
        # SuperLink state in memory (Flower's default) unless ``database`` names an SQLite file: through
        # SQLite a loopback round trip of 212 MB per node each way took 23.7 s instead of 12.4 s on 2 cores
        # (benchmarks/diagnostics/flower_transport.py, docs/experiments.md).
        db = ["--database", str(self.database)] if self.database else []
        if self.secure:
            self.tls = make_credentials(self.workdir / "certs")
            security = ["--ssl-ca-certfile", str(self.tls["ca"]), "--ssl-certfile", str(self.tls["cert"]),
                        "--ssl-keyfile", str(self.tls["key"]), "--enable-supernode-auth"]
            trust = f'root-certificates = "{self.tls["ca"]}"'
        else:
            security, trust = ["--insecure"], "insecure = true"
        self._start("superlink", "flower-superlink", *security, "--disable-runtime-dependency-installation",
                    "--host", "127.0.0.1", "--port", str(self.link), *db)
        (self.workdir / "flwr").mkdir(exist_ok=True)
        (self.workdir / "flwr" / "config.toml").write_text(
            f'[superlink.loopback]\naddress = "127.0.0.1:{self.link}"\n{trust}\n')
        wait_port(self.link)
        for node_config in self.node_configs:
            self.start_node(node_config)
        return self

    def start_node(self, node_config: str, register: bool = True, extra: tuple[str, ...] = ()) -> subprocess.Popen:
        """Start one more SuperNode; with ``secure``, under a new key of its own, registered with the
        SuperLink first unless ``register`` is false (then the SuperLink must refuse it)."""
        i = sum(p.args[0].endswith("flower-supernode") for p in self.procs)
        if self.secure:
            public = make_node_key(self.workdir / "keys" / f"supernode{i}")
            if register:
                reply = self._flwr("supernode", "register", str(public), "loopback")
                if not reply.get("success"):
                    raise FedProxyError(f"flwr supernode register refused supernode{i}'s key: {reply}")
            security = ["--root-certificates", str(self.tls["ca"]),
                        "--auth-supernode-private-key", str(public.with_suffix(""))]
        else:
            security = ["--insecure"]
        return self._start(f"supernode{i}", "flower-supernode", *security, "--superlink", f"127.0.0.1:{self.link}",
                           "--port", str(free_port()), "--health-server-address", f"127.0.0.1:{free_port()}",
                           "--node-config", node_config, *extra)

    def online_nodes(self) -> int:
        """SuperNodes the SuperLink counts online (``flwr supernode ls``; authenticated runs only)."""
        return sum(n["status"] == "online" for n in self._flwr("supernode", "ls", "loopback").get("nodes", []))

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
                    raise FedProxyError(f"run {sub['run-id']} ended {runs[0]['status']}\n"
                                        f"{self.run_log(sub['run-id'])}\n{self.log_tail()}")
                return runs[0]
            time.sleep(2)
        raise FedProxyError(f"run {sub['run-id']} did not finish in {timeout:.0f} s\n{self.log_tail()}")

    def run_log(self, run_id, chars: int = 3000) -> str:
        """The tail of a run's own log (the ServerApp's output and traceback), as ``flwr log`` shows it."""
        try:
            proc = subprocess.run([str(self.bin / "flwr"), "log", str(run_id), "loopback", "--show"], env=self.env,
                                  capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            return "--- run log: flwr log did not answer in 60 s"
        return f"--- run log\n{(proc.stdout + proc.stderr)[-chars:]}"

    def log_tail(self, chars: int = 2000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-chars:]}" for p in sorted(self.logs.iterdir()))
