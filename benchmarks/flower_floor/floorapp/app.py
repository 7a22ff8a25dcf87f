"""Flower's floor: the Deployment round of fedproxy's ClientApp without fedproxy's work.

The ServerApp sends ``clients`` SuperNodes (0 = all) a train message carrying ``payload-bytes`` of
random float16 (random: Flower moves identical array pieces once), ``rounds`` times; each ClientApp
replies with as many random bytes and, with ``our-imports``, first imports fedproxy's ClientApp
module (what fedproxy's ClientApp process pays before it starts working). The ServerApp writes the
round times and the clients' timings to ``out-file`` (a JSON file).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

client_app = ClientApp()
server_app = ServerApp()


def _payload(nbytes: int, rng: np.random.Generator) -> ArrayRecord:
    return ArrayRecord([rng.standard_normal(max(1, nbytes // 2)).astype(np.float16)])


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    t_in = time.time()
    cfg = msg.content["config"]
    if cfg["our-imports"]:
        import fedproxy.flower_app  # noqa: F401  (the module fedproxy's ClientApp process imports)
    t_imported = time.time()
    w = msg.content["arrays"].to_numpy_ndarrays()[0]  # unpack what arrived, as a client would
    reply = _payload(int(cfg["payload-bytes"]), np.random.default_rng(int(w.size) + int(cfg["round"])))
    metrics = {"queue_seconds": max(t_in - msg.metadata.created_at, 0.0), "import_seconds": t_imported - t_in,
               "handler_seconds": time.time() - t_in}
    return Message(content=RecordDict({"arrays": reply, "metrics": MetricRecord(metrics)}), reply_to=msg)


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    nbytes, rounds, want = int(rc["payload-bytes"]), int(rc["rounds"]), int(rc["clients"])
    nodes: list[int] = []
    t0 = time.time()
    while time.time() - t0 < 120 and len(nodes) < max(want, 1):
        nodes = sorted(grid.get_node_ids())
        time.sleep(0.5)
    nodes = nodes[:want] if want else nodes  # the nodes that train in fedproxy's round
    rng = np.random.default_rng(0)
    records = []
    for r in range(rounds):
        config = ConfigRecord({"payload-bytes": nbytes, "our-imports": bool(rc["our-imports"]), "round": r})
        msgs = [Message(content=RecordDict({"arrays": _payload(nbytes, rng), "config": config}), dst_node_id=n,
                        message_type="train") for n in nodes]
        t_round = time.time()
        replies = list(grid.send_and_receive(msgs, timeout=600))
        seconds = time.time() - t_round
        errors = [str(m.error.reason) for m in replies if m.has_error()]
        if errors:
            raise RuntimeError(f"floor round {r + 1}: {errors[0]}")
        records.append({"round_seconds": seconds,
                        "client_metrics": [dict(m.content["metrics"]) for m in replies]})
    Path(str(rc["out-file"])).write_text(json.dumps({"nodes": len(nodes), "payload_bytes": nbytes,
                                                     "our_imports": bool(rc["our-imports"]), "rounds": records}))
