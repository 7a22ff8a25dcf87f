"""Experiment: activation-aligned plug-in on a finished run (training-free, server text only).

A proxy block's linear layer learned ``dW`` on its own inputs ``x_p``; at the source LLM
block the same layer sees ``x_l``. Instead of adding ``dW`` as is, choose the LLM delta ``A``
that reproduces the proxy's output change on server text,
``min_A sum_t |A x_l,t - dW x_p,t|^2 + lam |A|^2``, i.e. ``A = dW C_pl (C_ll + lam I)^-1`` with
``C_pl = sum x_p x_l^T`` and ``C_ll = sum x_l x_l^T`` (RegMean-style closed form). Norm deltas
are added as is. Where ``x_p = x_l`` this is ``dW`` (up to the ridge).

    python benchmarks/aligned_fusion.py runs/seeds6/seed1 --scales 1 2 3

Reads ``<run>/report.json`` and the run's ``work/fedproxy/{proxy,proxy_tuned}``; prints server
validation / test accuracy of the fused LLM for plain ``source`` fusion and the aligned one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from fedproxy.compress import load_proxy, split_block_key
from fedproxy.config import RunConfig
from fedproxy.context import build_context
from fedproxy.fuse import fuse_state
from fedproxy.modeling import blocks, load_params, snapshot


def linear_inputs(model: nn.Module, block_ids: list[int]) -> tuple[dict[str, torch.Tensor], list]:
    """Forward pre-hooks that record the input of every Linear in ``block_ids``, keyed by weight name."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    layers = blocks(model)
    prefix = next(n for n, _ in model.named_parameters() if split_block_key(n)).split(".layers.")[0] + ".layers."
    for b in block_ids:
        for name, mod in layers[b].named_modules():
            if isinstance(mod, nn.Linear):
                key = f"{prefix}{b}.{name}.weight"
                handles.append(mod.register_forward_pre_hook(lambda m, args, k=key: seen.__setitem__(k, args[0])))
    return seen, handles


@torch.no_grad()
def gram_stats(proxy, llm, keep: list[int], batches) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Proxy-keyed weight name -> (C_pl, C_ll) over the valid tokens of ``batches``."""
    p_in, ph = linear_inputs(proxy, list(range(len(keep))))
    l_in, lh = linear_inputs(llm, keep)
    stats: dict[str, list[torch.Tensor]] = {}
    try:
        for ids, mask in batches:
            proxy(input_ids=ids, attention_mask=mask)
            llm(input_ids=ids, attention_mask=mask)
            valid = mask.bool()
            for pkey, xp in p_in.items():
                prefix, j, rest = split_block_key(pkey)
                xl = l_in[f"{prefix}{keep[j]}.{rest}"][valid].double()
                xp = xp[valid].double()
                acc = stats.setdefault(pkey, [0.0, 0.0])
                acc[0] = acc[0] + xp.T @ xl
                acc[1] = acc[1] + xl.T @ xl
    finally:
        for h in ph + lh:
            h.remove()
    return {k: (v[0], v[1]) for k, v in stats.items()}


def align_delta(delta: dict[str, torch.Tensor], stats, ridge: float) -> dict[str, torch.Tensor]:
    out = {}
    for key, d in delta.items():
        if key not in stats:
            out[key] = d
            continue
        c_pl, c_ll = stats[key]
        lam = ridge * c_ll.diagonal().mean()
        rhs = d.double() @ c_pl  # A (C_ll + lam I) = dW C_pl; C_ll is symmetric
        a = torch.linalg.solve(c_ll + lam * torch.eye(c_ll.shape[0], dtype=c_ll.dtype), rhs.T).T
        out[key] = a.to(d.dtype)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    p.add_argument("--ridge", type=float, nargs="+", default=[0.01])
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    report = json.loads((args.run / "report.json").read_text())
    cfg = RunConfig.from_dict(report["config"])
    ctx = build_context(cfg, args.run / "aligned_fusion", progress=False)
    base, pmap = load_proxy(args.run / "work" / "fedproxy" / "proxy")
    tuned, _ = load_proxy(args.run / "work" / "fedproxy" / "proxy_tuned")
    b, t = snapshot(base), snapshot(tuned)
    delta = {k: t[k] - b[k] for k in b if not (t[k] == b[k]).all()}
    stats = gram_stats(base.eval(), ctx.llm.eval(), pmap.keep, ctx.server_text_batches(cfg.compress.distill_batch))
    llm_state = snapshot(ctx.llm)
    rows = []
    for label, ridge in [("source", None)] + [(f"aligned ridge {r:g}", r) for r in args.ridge]:
        d = delta if ridge is None else align_delta(delta, stats, ridge)
        for scale in args.scales:
            load_params(ctx.llm, fuse_state(llm_state, d, pmap, "source", scale))
            rows.append({"fusion": label, "scale": scale, "val_accuracy": ctx.val_accuracy(ctx.llm),
                         "test_accuracy": ctx.evaluate(ctx.llm)["accuracy"]})
            print(f"{args.run.name}: {label} x{scale:g}: val {rows[-1]['val_accuracy']:.3f} "
                  f"test {rows[-1]['test_accuracy']:.3f}", flush=True)
    out = args.out or args.run / "aligned_fusion.json"
    out.write_text(json.dumps({"seed": cfg.seed, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
