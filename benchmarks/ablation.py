"""Ablations: one `fedproxy run` per variant, one table, paired 95% bootstrap CIs against the first variant.

Usage (the tables in docs/results.md and docs/experiments.md):
    python benchmarks/ablation.py --suite paper --config converge --seeds 0 1 2 --out runs/ablation
    python benchmarks/ablation.py --suite aggregators --seeds 0 1 2 --out runs/ablation
    python benchmarks/ablation.py --suite transfer --out runs/ablation
    python benchmarks/ablation.py --suite keep-pooled --config converge --out runs/ablation \
        --baselines 'runs/converge/seed{seed}'   # keep ratios: transfer alone, gain shares from the full run
    python benchmarks/ablation.py --suite pooled-lr --config converge --out runs/ablation \
        --baselines 'runs/converge/seed{seed}' --proxy-dir 'runs/converge/seed{seed}/work/fedproxy/proxy'
    python benchmarks/ablation.py --suite transfer-pooled --config converge --out runs/ablation \
        --baselines 'runs/converge/seed{seed}' --proxy-dir 'runs/converge/seed{seed}/work/fedproxy/proxy'
    python benchmarks/ablation.py --suite share-pooled --config converge --out runs/ablation \
        --baselines 'runs/converge/seed{seed}' --proxy-dir 'runs/converge/seed{seed}/work/fedproxy/proxy'
    python benchmarks/ablation.py --suite pooled-full --config converge --out runs/ablation \
        --baselines 'runs/converge/seed{seed}'
    python benchmarks/ablation.py --suite privacy --out runs/ablation
    python benchmarks/ablation.py --suite stopping --config converge-qa --seeds 0 1 2 --out runs/ablation \
        --records benchmarks/results/records/qa-converge
    python benchmarks/ablation.py --suite distill --config converge-qa --seeds 0 1 2 --out runs/ablation \
        --records benchmarks/results/records/qa-converge benchmarks/results/records/qa-converge-undistilled
    python benchmarks/ablation.py --suite rollback --seeds 0 1 2 3 4 --out runs/ablation
    python benchmarks/ablation.py --suite gap --seeds 0 1 2 --out runs/ablation

Each variant is the default config plus the listed overrides, run with
methods=["fedproxy"] unless it sets `methods` (its row is then the first method listed);
results are resumable (--resume) and summarised in <out>/<suite>.json and on stdout (mean ±
std over seeds, and the paired difference to the first variant over seeds x test examples
with its 95% bootstrap CI). ``--config`` picks the preset (default: the quick one). Within a
seed, variants that do not change compress.* reuse the first variant's proxy
(compress.proxy_dir), so compression runs once per seed. With ``--records`` (seed records,
benchmarks/records.py), a variant whose config is the record's own is not run again: the
record's FedProxy is its row, and the record's baselines give the share of the centralized gain.
A variant too long for one working session runs into a seed record of its own, which ``--records``
then also lists:

    python benchmarks/records.py continue benchmarks/results/records/qa-converge-undistilled/seed0.json.gz \
        runs/qa-undistilled/seed0 -- --config converge-qa --set seed=0 --set compress.distill_steps=0 \
        --set 'methods=["fedproxy"]'
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

import numpy as np

from fedproxy.cli import main as fedproxy_main
from fedproxy.config import load_config
from fedproxy.errors import FedProxyError
from fedproxy.eval import headline
from fedproxy.eval.stats import gain_ci, paired_ci
from fedproxy.pipeline import config_changes
from fedproxy.report import example_scores, shipped_harm
from records import as_report, read, restore  # benchmarks/records.py, beside this script

SUITES: dict[str, dict[str, list[str]]] = {
    # The paper's stage 2 (arXiv 2604.19015 §4.2): H-TIES, the conflict-weighted proximal term
    # (lambda from the public reproduction), both, against TIES and FedAvg; last, both with the
    # paper's LoRA clients (r = 32, alpha = 64).
    "paper": {
        "fedavg": ["fed.aggregator=fedavg"],
        "ties": ["fed.aggregator=ties"],
        "h-ties": ["fed.aggregator=h-ties"],
        "pcr (fedavg merge)": ["fed.aggregator=fedavg", "fed.pcr_lambda=1e-5"],
        "h-ties + pcr": ["fed.aggregator=h-ties", "fed.pcr_lambda=1e-5"],
        "h-ties + pcr, LoRA r=32": ["fed.aggregator=h-ties", "fed.pcr_lambda=1e-5", "fed.lora_r=32"],
    },
    "aggregators": {name: [f"fed.aggregator={name}"] for name in
                    ("fedavg", "ties", "dare", "agreement", "median", "fedavgm")},
    # Accuracy cost of the privacy options on the default benchmark (FedAvg, since SecAgg+ and
    # the DP noise calibration both need a mean). Update norms are ~4-5 here, so C = 5 barely clips.
    "privacy": {
        "fedavg": ["fed.aggregator=fedavg"],
        "fedavg + SecAgg+ (Simulation Engine)": ["fed.aggregator=fedavg", "fed.engine=simulation", "fed.secagg=true"],
        "fedavg + DP sigma=0.001": ["fed.aggregator=fedavg", "fed.dp_clip=5.0", "fed.dp_noise=0.001"],
        "fedavg + DP sigma=0.1": ["fed.aggregator=fedavg", "fed.dp_clip=5.0", "fed.dp_noise=0.1"],
        "fedavg + DP sigma=1.0": ["fed.aggregator=fedavg", "fed.dp_clip=5.0", "fed.dp_noise=1.0"],
    },
    # Where the gap to centralized comes from: the same pipeline with the proxy trained on
    # pooled data (no federation), next to the LLM's zero-shot and centralized accuracy.
    "gap": {
        "fedproxy": [],
        "proxy-centralized (pooled data)": ['methods=["proxy-centralized", "zero-shot", "centralized"]'],
    },
    # The trade-off a user chooses from (issue #21): more LLM blocks in the proxy transfer better and
    # give away more (the IP gap: the proxy alone against the fused LLM and the LLM's zero-shot).
    "keep": {f"keep {r}": [f"compress.keep_ratio={r}"] for r in (0.5, 0.67, 0.8)},
    # The same, cheaply: the proxy trained on pooled data and plugged in (on converge seed 0 it was
    # level with federated FedProxy, +0.006 [-0.020, +0.032]), so transfer alone is measured.
    "keep-pooled": {f"keep {r}, pooled": [f"compress.keep_ratio={r}", 'methods=["proxy-centralized"]']
                    for r in (0.5, 0.67, 0.8)},
    # Issue #21: the pooled proxy trains at fed.lr (2e-4) while centralized-kept, the kept blocks
    # trained in place, uses fed.centralized_lr (5e-5): is the plug-in's shortfall the learning rate?
    # (5e-5 was worse on converge seed 0, so a higher rate too.)
    "pooled-lr": {"lr 2e-4 (fed.lr), pooled": ['methods=["proxy-centralized"]'],
                  "lr 5e-5 (centralized_lr), pooled": ['methods=["proxy-centralized"]', "fed.lr=5e-5"],
                  "lr 5e-4, pooled": ['methods=["proxy-centralized"]', "fed.lr=5e-4"]},
    # Issue #21, transfer levers with the proxy trained on pooled data (no federation): the paper's LoRA
    # clients (r = 32, alpha = 64), whose low-rank delta may carry over to the LLM differently, and
    # no distillation, so the delta is taken from the LLM's own block weights, exactly where it is
    # plugged in. Run with --proxy-dir to share the full run's proxy with the first two.
    "transfer-pooled": {"pooled": ['methods=["proxy-centralized"]'],
                        "pooled, LoRA r=32": ['methods=["proxy-centralized"]', "fed.lora_r=32"],
                        "pooled, no distillation": ['methods=["proxy-centralized"]', "compress.distill_steps=0"]},
    # Issue #21, a proxy built to learn more: layer sharing (CRaSh), each kept block also running at the
    # depths of the dropped blocks after it (same tensors, about twice the compute), fused with the
    # variant server validation prefers; and that fusion choice alone, on the unshared proxy. Run with
    # --proxy-dir: the unshared rows share the full run's proxy.
    "share-pooled": {"pooled": ['methods=["proxy-centralized"]'],
                     "pooled, layer sharing, fuse auto": ['methods=["proxy-centralized"]', "compress.share_layers=true",
                                                          "fuse.variant=auto"],
                     "pooled, fuse auto": ['methods=["proxy-centralized"]', "fuse.variant=auto"],
                     # seed 0: the shared proxy scored 0.299 before training after 40 steps (unshared 0.398)
                     "pooled, layer sharing, 160 distillation steps, fuse auto": [
                         'methods=["proxy-centralized"]', "compress.share_layers=true", "compress.distill_steps=160",
                         "fuse.variant=auto"]},
    # Issue #21: is the proxy's shortfall the proxy or how it is trained? A "proxy" of every block,
    # undistilled, is the LLM itself: trained by the proxy's pooled machinery at fed.lr, and at
    # centralized's rate, against `centralized` (the same LLM, pooled_finetune at 5e-5).
    "pooled-full": {"keep 1.0 (the LLM), pooled, fed.lr": ['methods=["proxy-centralized"]', "compress.keep_ratio=1.0",
                                                         "compress.distill_steps=0"],
                    "keep 1.0 (the LLM), pooled, lr 5e-5": ['methods=["proxy-centralized"]', "compress.keep_ratio=1.0",
                                                          "compress.distill_steps=0", "fed.lr=5e-5"]},
    # Issue #25: does discarding a round that collapses the global proxy, or leaves it clearly
    # below the round before, help? (On the quick run's seed 0 the proxy collapsed in rounds 2-3.)
    # zero-shot runs beside each (seconds) so every row counts harm: the shipped model below it or collapsed.
    "rollback": {"no rollback": ['methods=["fedproxy", "zero-shot"]'],
                 "rollback": ['methods=["fedproxy", "zero-shot"]', "fed.rollback=true"]},
    # What patience watches: the fused LLM at x1 (default) or the global proxy (fed.stop_on). On converge-qa
    # seeds 0 and 1 x1 flattened from round 5-6 while the proxy still gained and x2 shipped.
    "stopping": {"patience on the fused LLM at x1": [], "patience on the proxy": ["fed.stop_on=proxy"]},
    # Issue #21, the IP gap: distillation makes the proxy a better model on its own (what a client keeps) but,
    # on the quick benchmark's seed 0, not a better fused LLM (0.505 distilled, 0.517 without; proxy alone
    # 0.430 and 0.385). Without it the kept blocks are the LLM's own, exactly where the delta is plugged in.
    "distill": {"distilled proxy": [], "undistilled proxy": ["compress.distill_steps=0"]},
    "transfer": {
        "default": [],
        "more-rounds (6x5)": ["fed.rounds=6", "fed.local_steps=5"],
        "prox_mu=0.1": ["fed.prox_mu=0.1"],
        "train-embeddings": ["fed.train_embeddings=true"],
        "loss-drop selection": ["compress.method=loss-drop"],
        "no distillation": ["compress.distill_steps=0"],
        "uniform selection": ["compress.method=uniform"],
        "fusion auto variant": ["fuse.variant=auto"],
    },
}


def run_variant(out: Path, overrides: list[str], seed: int, resume: bool, config: str | None = None) -> dict:
    """One run; its row is the first method in ``methods`` (``fedproxy`` unless overridden)."""
    methods = next((json.loads(o.split("=", 1)[1]) for o in overrides if o.startswith("methods=")), ["fedproxy"])
    sets = [x for o in [f"methods={json.dumps(methods)}", f"seed={seed}", *overrides] for x in ("--set", o)]
    cmd = ["run", "--out", str(out), "--quiet", *(["--config", config] if config else []), *sets]
    if fedproxy_main(cmd + (["--resume"] if resume else [])) != 0:
        raise SystemExit(1)
    full = json.loads((out / "report.json").read_text())
    report, clients = full["methods"], [c["name"] for c in full["benchmark"]["clients"]]
    r = report[methods[0]]
    checks = r.get("federation", {}).get("round_checks", [])
    return {"harm": shipped_harm(r, report["zero-shot"], clients) if "zero-shot" in report else None,
            "rounds_flagged": [i + 1 for i, c in enumerate(checks) if c.get("flagged")],
            "rounds_rolled_back": [i + 1 for i, c in enumerate(checks) if c.get("rolled_back")],
            "overrides": overrides, "fused_accuracy": headline(r),
            "scores": example_scores(r, clients, required=True).tolist(),
            "proxy_scores": example_scores(r["proxy_after_fl"], clients, required=True).tolist(),
            "other_methods": {m: headline(report[m]) for m in methods[1:]},
            "proxy_after_fl": headline(r["proxy_after_fl"]),
            "proxy_before_fl": headline(r["proxy_before_fl"]),
            "per_client": {k: headline(v) for k, v in r["per_client"].items()},
            "fusion": {"variant": r["fusion"]["variant"], "scale": r["fusion"]["scale"],
                       "shipped": r["fusion"].get("decision", {}).get("shipped")},
            "final_train_loss": r["federation"]["round_train_loss"][-1], "wall_seconds": r["wall_seconds"],
            "privacy": r["federation"]["privacy"]}


def mean_std(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), required=True)
    p.add_argument("--only", nargs="*", help="run only these variant names; the suite's other variants whose runs "
                                             "have finished for every seed still join the table and the JSON")
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--resume", action="store_true")
    p.add_argument("--config", default=None, help="preset or config file every variant starts from")
    p.add_argument("--baselines", default=None, metavar="PATTERN",
                   help="a full run per seed whose zero-shot and centralized rows give each variant's share of "
                        "the centralized gain, e.g. 'runs/converge/seed{seed}' (same config and seed)")
    p.add_argument("--proxy-dir", default=None, metavar="PATTERN",
                   help="a compressed proxy per seed for the variants that keep compress.*, e.g. "
                        "'runs/converge/seed{seed}/work/fedproxy/proxy' (the full run's own proxy)")
    p.add_argument("--records", nargs="+", default=[], metavar="DIR",
                   help="folders of seed records (seed<N>.json.gz, benchmarks/records.py) of --config, the "
                        "benchmark's own and, for runs that outlast a session, one per variant: a variant whose "
                        "config is a record's own takes that record's row instead of running again, and the "
                        "zero-shot and centralized of a record holding them give the share of the centralized "
                        "gain (where --baselines is not given)")
    args = p.parse_args(argv)
    # seed -> [(path, record)], in the order the folders were given
    records = {s: [(path, read(path)) for d in args.records if (path := Path(d, f"seed{s}.json.gz")).is_file()]
               for s in args.seeds}

    def record_for(seed: int, overrides: list[str]) -> Path | None:
        """The seed record whose experiment is this variant's, if any."""
        return next((path for path, rec in records[seed] if _is_record(rec, overrides, seed, args.config)), None)

    def run_dir(seed: int, name: str) -> Path:
        return Path(args.out) / args.suite / f"seed{seed}" / re.sub(r"[^a-z0-9.=]+", "-", name.lower()).strip("-")

    # --only chooses what runs; a finished variant (or one a seed record holds) is only read back (its run
    # resumes with nothing left to do), so the suite's JSON keeps every row that exists, not only those just run
    def finished(n: str, o: list[str]) -> bool:
        return all((run_dir(s, n) / "report.json").is_file() or record_for(s, o) for s in args.seeds)

    variants = {n: o for n, o in SUITES[args.suite].items() if not args.only or n in args.only or finished(n, o)}
    if unknown := sorted(set(args.only or []) - set(SUITES[args.suite])):
        p.error(f"--only {unknown}: not variants of suite {args.suite}; its variants are "
                + ", ".join(repr(n) for n in SUITES[args.suite]))
    rows: dict[str, dict[int, dict]] = {n: {} for n in variants}
    for seed in args.seeds:
        # variants that keep compress.* reuse one proxy (same seed, same data): --proxy-dir's, or the first one's
        shared_proxy = Path(args.proxy_dir.format(seed=seed)) if args.proxy_dir else None
        for name, overrides in variants.items():
            out = run_dir(seed, name)
            compress_default = not any(o.startswith("compress.") for o in overrides)
            from_record = record_for(seed, overrides)
            if from_record:  # its run folder gets the record's methods, so --resume runs none of them
                restore(from_record, out)
            share = compress_default and shared_proxy and not from_record
            extra = [f"compress.proxy_dir={shared_proxy}"] if share else []
            read_back = bool(args.only) and name not in args.only
            rows[name][seed] = run_variant(out, overrides + extra, seed,
                                           args.resume or read_back or from_record is not None, args.config)
            compressed = out / "work" / "compressed"  # absent where the row came from a record
            if compress_default and shared_proxy is None and compressed.is_dir():  # what that run's methods shared
                shared_proxy = next(compressed.iterdir())
    baseline_scores = {}  # seed -> method -> per-example test scores of the --baselines run (or the record)
    for seed in args.seeds:
        if args.baselines:
            full = json.loads(Path(args.baselines.format(seed=seed), "report.json").read_text())
        elif full_rec := next((rec for _, rec in records[seed]
                               if {"zero-shot", "centralized"} <= set(rec["methods"])), None):
            full = as_report(full_rec)
        else:
            continue
        base, clients = full["methods"], [c["name"] for c in full["benchmark"]["clients"]]
        kept = [m for m in ("zero-shot", "centralized", "centralized-kept") if m in base]
        baseline_scores[seed] = {m: example_scores(base[m], clients, required=True) for m in kept}
        for by_seed in rows.values():
            by_seed[seed]["other_methods"].update({m: headline(base[m]) for m in kept})
    gains = _gain_recovered(rows, baseline_scores)
    # The IP gap: the fused LLM the owner ships against the trained proxy a client keeps.
    ip_gaps = {name: paired_ci([np.asarray(r["scores"]) for r in by_seed.values()],
                               [np.asarray(r["proxy_scores"]) for r in by_seed.values()])
               for name, by_seed in rows.items()}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, f"{args.suite}.json").write_text(json.dumps({"seeds": args.seeds, "rows": rows,
                                                                "gain_recovered": gains, "ip_gap": ip_gaps},
                                                               indent=2))
    first = next(iter(variants))
    print(f"| variant ({args.suite}, seeds {args.seeds}) | fused LLM score | per seed | vs {first}: mean [95% CI] "
          f"| proxy before FL | proxy after FL | proxy after FL vs {first} [95% CI] "
          "| fused - proxy alone (IP gap) [95% CI] | fusion scales |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, by_seed in rows.items():
        acc = [r["fused_accuracy"] for r in by_seed.values()]
        d = paired_ci([np.asarray(r["scores"]) for r in by_seed.values()],
                      [np.asarray(rows[first][s]["scores"]) for s in by_seed])
        dp = paired_ci([np.asarray(r["proxy_scores"]) for r in by_seed.values()],
                       [np.asarray(rows[first][s]["proxy_scores"]) for s in by_seed])
        ip = ip_gaps[name]
        print(f"| {name} | {mean_std(acc)} | {', '.join(f'{a:.3f}' for a in acc)} | "
              f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] | "
              f"{mean_std([r['proxy_before_fl'] for r in by_seed.values()])} | "
              f"{mean_std([r['proxy_after_fl'] for r in by_seed.values()])} | "
              f"{dp['mean']:+.3f} [{dp['ci95'][0]:+.3f}, {dp['ci95'][1]:+.3f}] | "
              f"{ip['mean']:+.3f} [{ip['ci95'][0]:+.3f}, {ip['ci95'][1]:+.3f}] | "
              f"{', '.join(format(r['fusion']['scale'], 'g') for r in by_seed.values())} |")
    for name, by_seed in rows.items():
        harmed = {s: r["harm"] for s, r in by_seed.items() if r["harm"] is not None}
        print(f"{name}: rounds flagged {sum(len(r['rounds_flagged']) for r in by_seed.values())}, rolled back "
              f"{sum(len(r['rounds_rolled_back']) for r in by_seed.values())}"
              + (f"; harm: below zero-shot on seeds {[s for s, h in harmed.items() if h['below_zero_shot']]}, "
                 f"collapsed on seeds {[s for s, h in harmed.items() if h['collapsed']]}" if harmed else ""))
    for name, g in gains.items():
        print(f"{name}: {g['mean']:.0%} of the centralized gain (95% CI [{g['ci95'][0]:.0%}, {g['ci95'][1]:.0%}], "
              f"seeds {g['seeds']})")
    return 0


def _is_record(record: dict | None, overrides: list[str], seed: int, config: str | None) -> bool:
    """Whether a variant (``overrides`` on ``config``, at ``seed``) is the experiment of the seed record
    ``record`` (same config up to the methods run) and the record holds its method."""
    if record is None:
        return False
    method = next((json.loads(o.split("=", 1)[1])[0] for o in overrides if o.startswith("methods=")), "fedproxy")
    variant = load_config(config).with_overrides([f"seed={seed}", *overrides]).to_flat()
    return method in record["methods"] and not config_changes(record["run_config"], variant)


def _gain_recovered(rows: dict[str, dict[int, dict]], baseline_scores: dict[int, dict]) -> dict:
    """Each variant's share of the centralized gain over zero-shot, with a 95% bootstrap CI over seeds x
    test examples, on the seeds whose --baselines run has both zero-shot and centralized."""
    seeds = [s for s, b in baseline_scores.items() if {"zero-shot", "centralized"} <= set(b)]
    if not seeds:
        return {}
    return {name: {**gain_ci([np.asarray(by_seed[s]["scores"]) for s in seeds],
                             [baseline_scores[s]["zero-shot"] for s in seeds],
                             [baseline_scores[s]["centralized"] for s in seeds]), "seeds": seeds}
            for name, by_seed in rows.items()}


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FedProxyError as e:  # a clear message, not a traceback
        sys.exit(f"error: {e}")
