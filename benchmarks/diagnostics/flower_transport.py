"""What moving arrays through Flower's Deployment Engine costs, without any training.

Usage (the transport table in docs/results.md, Performance):
    python benchmarks/diagnostics/flower_transport.py --mb 212 106 --database memory sqlite --out runs/flower_transport.json

For each payload size and SuperLink state store, a loopback SuperLink + 2 SuperNodes
(``fedproxy.loopback``) run 3 rounds of a minimal Flower app: the server sends each node
``--mb`` MB of random float32 arrays, the node adds 1 and sends them back. Per round it
reports the round trip, the time before the client handler starts (transport down, ClientApp
process start) and the time from the reply leaving the handler to the server holding it.
Random data, so Flower's content-addressed chunks cannot be deduplicated.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from fedproxy.loopback import Loopback

PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "transportapp"
version = "0.1.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedproxy"

[tool.flwr.app.components]
serverapp = "transportapp.app:server_app"
clientapp = "transportapp.app:client_app"

[tool.flwr.app.config]
mb = 1
rounds = 3
out = ""
"""

APP = '''
import json
import time

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

client_app = ClientApp()
server_app = ServerApp()


@client_app.train()
def train(msg, context):
    t_in = time.time()
    arrays = [a + 1 for a in msg.content["arrays"].to_numpy_ndarrays()]
    return Message(content=RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(
        {"queue": t_in - msg.metadata.created_at, "sent": time.time()})}), reply_to=msg)


@server_app.main()
def main(grid, context):
    n = int(context.run_config["mb"]) * 2**20 // 4 // 64
    rng = np.random.default_rng(0)
    while len(grid.get_node_ids()) < 2:
        time.sleep(0.2)
    nodes, rounds = sorted(grid.get_node_ids()), []
    for _ in range(int(context.run_config["rounds"])):
        arrays = [rng.standard_normal(n).astype(np.float32) for _ in range(64)]
        t0 = time.time()
        msgs = [Message(content=RecordDict({"arrays": ArrayRecord(arrays)}), dst_node_id=node, message_type="train")
                for node in nodes]
        replies = list(grid.send_and_receive(msgs))
        t1 = time.time()
        metrics = [dict(r.content["metrics"]) for r in replies]
        rounds.append({"round_trip": t1 - t0, "before_handler": max(m["queue"] for m in metrics),
                       "back": t1 - min(m["sent"] for m in metrics)})
    with open(str(context.run_config["out"]), "w") as fh:
        json.dump(rounds, fh)
'''


def measure(mb: int, database: str, rounds: int, workdir: Path) -> list[dict]:
    app = workdir / "app"
    (app / "transportapp").mkdir(parents=True, exist_ok=True)
    (app / "pyproject.toml").write_text(PYPROJECT)
    (app / "transportapp" / "__init__.py").write_text("")
    (app / "transportapp" / "app.py").write_text(APP)
    out = workdir / "rounds.json"
    db = workdir / "state.db" if database == "sqlite" else None
    with Loopback(workdir / "flower", ["partition-id=0", "partition-id=1"], database=db) as lb:
        lb.run(app, f'mb={mb} rounds={rounds} out="{out}"', timeout=900)
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=int, nargs="+", default=[212], help="MB of float32 arrays each way per node")
    p.add_argument("--database", nargs="+", choices=["memory", "sqlite"], default=["memory", "sqlite"],
                   help="the SuperLink's state store")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="runs/flower_transport.json")
    args = p.parse_args(argv)
    results = []
    print("| MB per node each way | SuperLink state | round trip, s (median) | before the handler | reply to server |")
    print("|---|---|---|---|---|")
    for mb in args.mb:
        for database in args.database:
            with tempfile.TemporaryDirectory() as tmp:
                rounds = measure(mb, database, args.rounds, Path(tmp))
            results.append({"mb": mb, "database": database, "rounds": rounds})
            med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
            print(f"| {mb} | {database} | {med['round_trip']:.1f} | {med['before_handler']:.1f} | {med['back']:.1f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"nodes": 2, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
