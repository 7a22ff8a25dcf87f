"""The activation-aligned plug-in (``fedproxy.fuse.align``, ``fuse.align=true``) on a finished run.

Refits each proxy layer's learned output change to the LLM's inputs on server text (closed
form, no training) and compares it with plain ``source`` fusion at each scale.

    python benchmarks/diagnostics/aligned_fusion.py runs/seeds6/seed1 --scales 1 2 3
    python benchmarks/diagnostics/aligned_fusion.py runs/align_s1 --calib val --scales 1 2 3

``--calib val`` fits on the prompts of the server's validation examples (task text, no
labels read) instead of the public server text the run's own ``fuse.align`` uses.

Reads ``<run>/report.json`` and the run's ``work/fedproxy/{proxy,proxy_tuned}``; prints server
validation / test accuracy of the fused LLM for plain ``source`` fusion and the aligned one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedproxy.api import proxy_delta
from fedproxy.config import RunConfig
from fedproxy.context import build_context
from fedproxy.data.encode import batches
from fedproxy.fuse import fuse_state
from fedproxy.fuse.align import align_delta, input_grams
from fedproxy.modeling import load_params, snapshot


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    p.add_argument("--ridge", type=float, nargs="+", default=[0.01])
    p.add_argument("--calib", choices=["server-text", "val"], default="server-text",
                   help="inputs the alignment is fitted on")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    report = json.loads((args.run / "report.json").read_text())
    cfg = RunConfig.from_dict(report["config"])
    ctx = build_context(cfg, args.run / "aligned_fusion", progress=False)
    work = args.run / "work" / "fedproxy"
    base, pmap, delta = proxy_delta(work / "proxy", work / "proxy_tuned")
    if args.calib == "val":
        prompts = [ctx.encoder.batch(c, with_label=False) for c in batches(ctx.bench.server_val, cfg.compress.distill_batch)]
        calib = [(b.input_ids, b.attention_mask) for b in prompts]
    else:
        calib = ctx.server_text_batches(cfg.compress.distill_batch)
    stats = input_grams(base.eval(), ctx.llm.eval(), pmap, calib)
    llm_state = snapshot(ctx.llm)
    rows = []
    for label, ridge in [("source", None)] + [(f"aligned on {args.calib}, ridge {r:g}", r) for r in args.ridge]:
        d = delta if ridge is None else align_delta(delta, stats, ridge)
        for scale in args.scales:
            load_params(ctx.llm, fuse_state(llm_state, d, pmap, "source", scale))
            rows.append({"fusion": label, "scale": scale, "val_accuracy": ctx.val_accuracy(ctx.llm),
                         "test_accuracy": ctx.evaluate(ctx.llm)["accuracy"]})
            print(f"{args.run.name}: {label} x{scale:g}: val {rows[-1]['val_accuracy']:.3f} "
                  f"test {rows[-1]['test_accuracy']:.3f}", flush=True)
    out = args.out or args.run / "aligned_fusion.json"
    out.write_text(json.dumps({"seed": cfg.seed, "calib": args.calib, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
