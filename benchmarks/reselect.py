"""Redo a finished run's plug-in decision under the current do-no-harm rule, and say whether it changes.

    python benchmarks/reselect.py runs/converge/seed0 --methods fedproxy proxy-centralized

For each method, the base and trained proxy the run saved (``work/<method>/proxy`` and
``proxy_tuned``) give the delta; every candidate is scored on server validation again and the
current rule (``fedproxy.proxies.choose_plugin``: paired test, fixed sequence, collapse guard)
picks what ships. Prints the recorded and the new decision per method, and writes them to
``<run>/reselect.json``. Used when the rule changes, to check committed results against it
without training again. Methods that keep no proxy files (Offsite-Tuning trains adapter blocks
only) cannot be redone this way: rerun them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from fedproxy.api import proxy_delta
from fedproxy.config import RunConfig
from fedproxy.context import build_context
from fedproxy.errors import FedProxyError
from fedproxy.methods import METHODS, fusion_settings
from fedproxy.proxies import choose_plugin


def reselect(run: Path, method: str, ctx) -> dict:
    work, recorded = run / "work" / method, json.loads((run / "results" / f"{method}.json").read_text())
    if not (work / "proxy_tuned").is_dir():
        raise FedProxyError(f"{work} keeps no proxy_tuned folder; rerun {method} instead")
    _, pmap, delta = proxy_delta(work / "proxy", work / "proxy_tuned")
    fusion = fusion_settings(ctx, METHODS.get(method))
    plugin, trials = choose_plugin(ctx, delta, pmap, fusion["variants"], fusion["scales"], None, fusion["keep_llm"])
    ctx.restore_llm()
    old = recorded["fusion"]
    return {"recorded": {"variant": old["variant"], "scale": old["scale"], "shipped": old["decision"]["shipped"]},
            "now": {"variant": plugin["variant"], "scale": plugin["scale"], "shipped": plugin["decision"]["shipped"],
                    "why": plugin["decision"]["why"]},
            "changed": (old["variant"], old["scale"]) != (plugin["variant"], plugin["scale"]),
            "rejected": plugin["decision"].get("rejected", [])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a finished `fedproxy run --out` folder")
    p.add_argument("--methods", nargs="+", default=["fedproxy", "proxy-centralized"])
    args = p.parse_args(argv)
    cfg = RunConfig.from_flat(json.loads((args.run / "run_config.json").read_text()))
    with tempfile.TemporaryDirectory() as tmp:
        ctx = build_context(cfg, Path(tmp), progress=False)
        out = {m: reselect(args.run, m, ctx) for m in args.methods}
    (args.run / "reselect.json").write_text(json.dumps(out, indent=2))
    for m, r in out.items():
        print(f"{m}: recorded x{r['recorded']['scale']:g} {r['recorded']['variant']} ({r['recorded']['shipped']}); "
              f"now x{r['now']['scale']:g} {r['now']['variant']} ({r['now']['shipped']}): "
              f"{'CHANGED' if r['changed'] else 'unchanged'}. {r['now']['why']}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FedProxyError as e:
        sys.exit(f"error: {e}")
