"""How long the real model takes end to end through `flwr run` on loopback (the stand-alone ServerApp).

One SuperLink and one SuperNode per client on this machine (TLS and SuperNode authentication
on with ``--secure``), the ServerApp running all three stages: compress, federate, fuse under
the do-no-harm rule, evaluate on server validation, write the fused checkpoint and the report.
Prints the wall time from submission to the finished run and where the server's time went.

Usage (the figure in docs/flower.md):
    python benchmarks/deployment.py --out runs/deployment.json
    python benchmarks/deployment.py --secure --set fed.rounds=2 --out runs/deployment_tls.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def measure(workdir: Path, config: str, overrides: list[str], secure: bool) -> dict:
    from fedproxy.config import load_config
    from fedproxy.loopback import Loopback

    cfg = load_config(config).with_overrides(overrides)
    clients = cfg.data.num_clients
    # The SuperNodes share this machine's cores: each gets its share (fedproxy.flower_app.node_threads).
    threads = max(1, (os.cpu_count() or 1) // clients)
    nodes = [f"partition-id={i} num-partitions={clients} threads={threads}" for i in range(clients)]
    out = workdir / "out"
    root = Path(__file__).resolve().parents[1]
    with Loopback(workdir / "deploy", nodes, secure=secure) as lb:
        t0 = time.perf_counter()
        lb.run(root, f'fedproxy-config="{config}" out-dir="{out}" overrides="{";".join(overrides)}"', timeout=7200)
        wall = time.perf_counter() - t0
    report = json.loads((out / "report.json").read_text())
    fed = report["federation"]
    rounds = [s for s in fed["round_seconds"] if s is not None]
    return {"config": config, "overrides": overrides, "secure": secure, "clients": clients, "threads_per_node": threads,
            "model": cfg.model.source, "wall_seconds": wall, "server_seconds": report["total_seconds"],
            "compress_seconds": report["compression"].get("total_seconds"), "rounds": fed["rounds"],
            "round_seconds": rounds, "checks_seconds": [c.get("seconds") for c in fed["round_checks"]],
            "llm_val_score": report["llm_val_score"], "fused_val_score": report["fused_val_score"],
            "shipped": report["fusion"]["decision"].get("shipped")} | {
        # what remains: the LLM's and the plug-in candidates' validation passes, the final proxy's,
        # and writing the fused checkpoint
        "rest_seconds": report["total_seconds"] - (report["compression"].get("total_seconds") or 0) - sum(rounds)
        - sum(c.get("seconds", 0) for c in fed["round_checks"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="default", help="the ServerApp's preset (default: SmolLM2 + MultiEmo)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="overrides")
    p.add_argument("--secure", action="store_true", help="TLS and SuperNode authentication on every link")
    p.add_argument("--out", default="runs/deployment.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(Path(tmp), args.config, args.overrides, args.secure)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    r = result
    print(f"{r['model']}, {r['clients']} SuperNodes on loopback{' (TLS + authentication)' if r['secure'] else ''}: "
          f"{r['wall_seconds'] / 60:.1f} min from flwr run to finished; server {r['server_seconds']:.0f} s = "
          f"compress {r['compress_seconds'] or 0:.0f} s + {r['rounds']} rounds "
          f"({', '.join(f'{s:.0f}' for s in r['round_seconds'])} s) + round checks "
          f"{sum(c or 0 for c in r['checks_seconds']):.0f} s + plug-in choice, evaluation and checkpoint "
          f"{r['rest_seconds']:.0f} s; shipped {r['shipped']} (validation: LLM "
          f"{r['llm_val_score']:.3f}, fused {r['fused_val_score']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
