"""report.json (machine-readable) and report.md + plot (for people)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import FedProxyError
from .eval import headline
from .eval.classify import class_recall
from .eval.guard import Acceptance, per_example
from .eval.stats import below_by_one_se, gain_ci, paired_ci
from .fuse import UNCHANGED_LLM


def _mb(x) -> str:
    return f"{x / 2**20:.1f}" if isinstance(x, (int, float)) and x else "-"


def gain_recovered(methods: dict, name: str) -> float | None:
    """Share of the centralized gain over zero-shot that ``name`` achieves."""
    try:
        zs, cen, m = (headline(methods[k]) for k in ("zero-shot", "centralized", name))
    except KeyError:
        return None
    return (m - zs) / (cen - zs) if cen != zs else None


# The method's promises, as the issue states them: most of the centralized gain, above
# Offsite-Tuning, and a fused LLM clearly better than the proxy a client keeps (the IP gap).
GAIN_GOAL = 0.9
# Baselines run through the same pipeline but are not FedProxy: Offsite-Tuning's "proxy" is its
# adapter + emulator, FedAvg-LoRA's is the whole LLM (no IP gap by design).
_NOT_PROXY_METHODS = ("offsite-tuning", "offsite-tuning-raw", "fedavg-lora")


def example_scores(result: dict, clients: list[str] | None = None, required: bool = False) -> np.ndarray | None:
    """A method's per-example test scores (1/0 correct for accuracy), ``clients`` in order (default: by
    name); None when the run kept no per-example tables (reports made before they were recorded), or
    with ``required`` a :class:`~fedproxy.errors.FedProxyError` saying so."""
    try:
        return np.asarray([x for c in (clients or sorted(result["per_client"]))
                           for x in per_example(result["per_client"][c])], dtype=float)
    except (KeyError, ValueError):
        if required:
            raise FedProxyError("this report has no per-example test tables (made before they were recorded); "
                                "rerun it with the current version") from None
        return None


def pooled_eval(result: dict, clients: list[str]) -> dict:
    """Every client's per-example tables end to end (what the collapse guard reads), and the mean loss."""
    per = [result["per_client"][c] for c in clients]
    ev = {key: [x for p in per for x in p[key]] for key in ("predictions", "gold", "outputs", "scores")
          if all(key in p for p in per)}
    ev["loss"] = sum(p["loss"] * p["n"] for p in per) / max(1, sum(p["n"] for p in per))
    return ev


def shipped_harm(result: dict, zero_shot: dict, clients: list[str]) -> dict:
    """Did a shipped model harm, on test (issue #25's count)? ``below_zero_shot``: below the unchanged
    LLM by more than one standard error; ``collapsed``: the collapse guard's reasons against it. A
    method that kept the unchanged LLM shipped the model it started from, which harms nothing even where
    the LLM itself concentrates on one class (tiny random models do)."""
    if result.get("fusion", {}).get("decision", {}).get("shipped") == UNCHANGED_LLM:
        return {"below_zero_shot": False, "collapsed": []}
    return {"below_zero_shot": below_by_one_se(example_scores(result, clients, required=True),
                                               example_scores(zero_shot, clients, required=True)),
            "collapsed": Acceptance().collapse(pooled_eval(result, clients), pooled_eval(zero_shot, clients))}


def _difference(name: str, check: str, a: dict, b: dict) -> dict:
    """``a`` above ``b``: holds when the paired 95% bootstrap CI over the test examples is above 0,
    fails when it is below, and is None (within noise) when it spans 0; without per-example tables,
    the sign of the difference decides."""
    d = headline(a) - headline(b)
    sa, sb = example_scores(a), example_scores(b)
    if sa is None or sb is None or len(sa) != len(sb):
        return {"method": name, "check": check, "measured": f"{d:+.3f}", "holds": d > 0}
    ci = paired_ci([sa], [sb])
    lo, hi = ci["ci95"]
    return {"method": name, "check": check, "measured": f"{ci['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]",
            "holds": True if lo > 0 else False if hi < 0 else None}


def goal_checks(methods: dict) -> list[dict]:
    """One entry per (proxy method, promise): what was measured and whether it holds.

    Only promises whose numbers are in ``methods`` are checked. Differences come with their paired
    95% CI over the test examples (one seed: the examples' noise only) when the run kept per-example
    tables, and a difference whose CI spans 0 is reported as within noise (``holds`` None).
    """
    checks = []
    for name, r in methods.items():
        if "proxy_after_fl" not in r or headline(r["proxy_after_fl"]) is None or name in _NOT_PROXY_METHODS:
            continue
        g = gain_recovered(methods, name)
        if g is not None:
            tables = [example_scores(methods[k]) for k in (name, "zero-shot", "centralized")]
            measured = f"{g:.0%}"
            if all(t is not None and len(t) == len(tables[0]) for t in tables):
                lo, hi = gain_ci(*([t] for t in tables))["ci95"]
                measured += f" [{lo:.0%}, {hi:.0%}]"
            checks.append({"method": name, "check": f"recovers >= {GAIN_GOAL:.0%} of the centralized gain",
                           "measured": measured, "holds": g >= GAIN_GOAL})
        if "offsite-tuning" in methods:
            checks.append(_difference(name, "fused LLM above Offsite-Tuning", r, methods["offsite-tuning"]))
        checks.append(_difference(name, "fused LLM above the proxy alone (the IP gap)", r, r["proxy_after_fl"]))
    return checks


def _verdict(holds: bool | None) -> str:
    return "within noise" if holds is None else "yes" if holds else "**no**"


def format_recall(recall: list[float | None]) -> list[str]:
    """:func:`class_recall` as text, two decimals, ``-`` for an absent class."""
    return ["-" if x is None else f"{x:.2f}" for x in recall]


def _recall_lines(methods: dict, labels: list[str]) -> list[str]:
    rows = [(name, class_recall(r["confusion"])) for name, r in methods.items() if "confusion" in r]
    if not rows:
        return []
    return (["", "Recall per class (all test examples; 0 = no example of that class predicted right):", "",
             "| method | " + " | ".join(labels) + " |", "|---" * (1 + len(labels)) + "|"]
            + [f"| {name} | " + " | ".join(format_recall(rec)) + " |" for name, rec in rows])


def _rounds(r: dict) -> str:
    """Federated rounds run (and the one kept), or the stretches of an early-stopped pooled run."""
    fed = r.get("federation")
    if fed and "rounds" in fed:
        best = fed.get("best_round", fed["rounds"])
        return f"{fed['rounds']}" + (f" ({best})" if best != fed["rounds"] else "")
    return f"{len(r['val_curve'])}" if r.get("val_curve") else "-"


def _examples_seen(r: dict) -> str:
    n = r.get("federation", {}).get("examples_seen") or r.get("examples_seen")
    return f"{n:,}" if n else "-"


def _decision_lines(methods: dict) -> list[str]:
    """What each plug-in decision shipped and why (``fuse.accept_alpha``), and what it rejected."""
    lines = []
    for name, r in methods.items():
        fusion = r.get("fusion")
        if fusion is None:
            continue
        decision = fusion.get("decision", {})
        if "shipped" not in decision:  # best validation score, no acceptance test
            if fusion.get("scale") == 0:
                lines.append(f"- {name}: no delta beat the unchanged LLM on server validation, so none was "
                             "plugged in (`fuse.keep_llm`); its accuracy is the LLM's as it is.")
            continue
        lines.append(f"- {name}: **{decision['shipped']}** shipped. {decision['why']}.")
        lines += [f"  - rejected x{t['scale']:g} {t['variant']}{' aligned' if t['aligned'] else ''}: "
                  f"{t['reason'].removeprefix('rejected: ')}" for t in decision.get("rejected", [])]
    return ["", "Plug-in decisions (do no harm: a paired one-sided test against the unchanged LLM on server "
                "validation, and a collapse guard):", "", *lines] if lines else []


def _round_check_lines(methods: dict) -> list[str]:
    lines = []
    for name, r in methods.items():
        fed = r.get("federation", {})
        for check, rnd in ((c, i + 1) for i, c in enumerate(fed.get("round_checks", []))):
            if check.get("flagged"):
                why = "; ".join(check["collapse"]) or (
                    f"fell {-check['change']:.3f} on validation from the round before (p = {check['drop_p']:.3g})")
                lines.append(f"- {name}, round {rnd}: the global proxy {why}"
                             + (" — rolled back (`fed.rollback`)" if check.get("rolled_back") else ""))
    return ["", "Flagged federated rounds:", "", *lines] if lines else []


# The learning curve's series (``fed.curve``): round-check key -> name in curves.
_CURVE_KEYS = {"fused_val_score": "fused_val", "fused_test_score": "fused_test",
               "val_score": "proxy_val", "proxy_test_score": "proxy_test"}


def curve_subset_score(result: dict, clients: list[str], per_client: int) -> float | None:
    """``result``'s mean test score on the first ``per_client`` examples of each client's test split:
    the examples the learning curve scores, so a finished method can be drawn on the curve's own
    examples rather than beside it. None without per-example tables."""
    try:
        xs = [x for c in clients for x in per_example(result["per_client"][c])[:per_client]]
    except (KeyError, ValueError):
        return None
    return float(np.mean(xs)) if xs else None


def learning_curves(reports: list[dict]) -> dict:
    """The learning curves of one or more seeds' reports (the same benchmark and ``fed.curve_test``).

    ``methods``: every method that recorded a curve, with each series per seed (``per_seed``; a seed
    stops at its own last round), its mean over the seeds that reached each round (``mean``, ``n``),
    and each seed's best round. ``references``: every method's final model scored on the curve's
    test subset, per seed and mean, so that zero-shot and centralized sit on the same examples."""
    first = reports[0]
    clients = [c["name"] for c in first["benchmark"]["clients"]]
    per_client = first["config"].get("fed", {}).get("curve_test")
    methods = {}
    for name in first["methods"]:
        checks = [r["methods"].get(name, {}).get("federation", {}).get("round_checks") or [] for r in reports]
        if not all(checks) or not all("fused_test_score" in c[0] for c in checks):
            continue
        entry = {"best_round": [r["methods"][name]["federation"].get("best_round", len(c))
                                for r, c in zip(reports, checks)]}
        for key, series in _CURVE_KEYS.items():
            per_seed = [[c.get(key) for c in seed_checks] for seed_checks in checks]
            rounds = max(map(len, per_seed))
            at = [[s[i] for s in per_seed if i < len(s) and s[i] is not None] for i in range(rounds)]
            entry[series] = {"mean": [float(np.mean(v)) if v else None for v in at], "n": [len(v) for v in at],
                             "per_seed": per_seed}
        methods[name] = entry
    references = {}
    for name in first["methods"] if methods else ():
        scores = [curve_subset_score(r["methods"][name], clients, per_client) if name in r["methods"] else None
                  for r in reports]
        if all(s is not None for s in scores):
            references[name] = {"mean": float(np.mean(scores)), "per_seed": scores}
    return {"test_per_client": per_client, "seeds": [r.get("seed") for r in reports],
            "methods": methods, "references": references}


def plot_curves(curves: dict, path: Path, metric: str = "accuracy") -> bool:
    """Validation and test-subset scores after every round, the mean over seeds in bold and each seed
    thin; on the test subset, each curve's shipped model as a star at its best round and every other
    finished method as a reference line. False when no method recorded a curve."""
    if not curves["methods"]:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    several, shipped = len(curves["seeds"]) > 1, []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, split in zip(axes, ("val", "test")):
        for i, (name, c) in enumerate(curves["methods"].items()):
            for who, style in (("fused", "-o"), ("proxy", "--")):
                series = c[f"{who}_{split}"]
                label = f"{name}: {'fused LLM' if who == 'fused' else 'proxy alone'}"
                if several:
                    for s in series["per_seed"]:
                        ax.plot(range(1, len(s) + 1), s, style.replace("o", ""), color=f"C{i}", lw=0.6, alpha=0.35)
                    label += f" (mean of {len(curves['seeds'])} seeds)"
                ax.plot(range(1, len(series["mean"]) + 1), series["mean"], style, ms=3, color=f"C{i}", label=label)
        if split == "test":
            for i, (name, c) in enumerate(curves["methods"].items()):
                if name in curves["references"]:  # what shipped (any scale, or the unchanged LLM), at its best round
                    shipped += ax.plot([float(np.mean(c["best_round"]))], [curves["references"][name]["mean"]],
                                       "*", ms=10, color=f"C{i}", label=f"{name}: shipped, at its best round")
            refs = sorted((r["mean"], n) for n, r in curves["references"].items() if n not in curves["methods"])
            span = ax.get_xlim()[1] - 1
            for k, (y, name) in enumerate(refs):
                ax.axhline(y, color="grey", ls=":", lw=1)
                close = k > 0 and y - refs[k - 1][0] < 0.02  # labels of close lines side by side, not on top
                ax.text(1 + (span / 2 if close else 0), y, name, fontsize=7, color="grey", va="bottom")
        where = ("validation" if split == "val"
                 else f"test, first {curves['test_per_client']} per client")
        ax.set_title(f"{metric} after each round: {where}", fontsize=9)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel(metric)
    axes[0].legend(fontsize=7)
    if shipped:
        axes[1].legend(handles=shipped, fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(report: dict, out: Path) -> Path:
    methods = report["methods"]
    for name in methods:
        methods[name]["gain_recovered"] = gain_recovered(methods, name)
    report["checks"] = goal_checks(methods)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    clients = report["benchmark"]["clients"]
    metric = report["benchmark"].get("metric", "accuracy")
    total = report["total_seconds"]
    spent = sum(r.get("wall_seconds", 0.0) for r in report["methods"].values())
    # A resumed run reuses the methods an earlier invocation finished: say what they cost too.
    timing = (f"total {total:.0f} s" if spent <= 1.05 * total else
              f"{total:.0f} s in this invocation; the methods' own wall times add up to {spent:.0f} s")
    lines = [
        f"# FedProxy report — {report['benchmark']['name']} (seed {report['seed']})",
        "",
        f"Model `{report['config']['model']['source']}`, {len(clients)} clients, "
        f"device {report['environment']['device']}, {timing}.",
        *(["", f"**Partial report**: not finished yet: {', '.join(report['unfinished'])}."]
          if report.get("unfinished") else []),
        *(["", "Inputs cut to data.max_length={}: {} train, {} test, {} validation examples.".format(
            report["config"]["data"]["max_length"], *cut.values())]
          if any((cut := report["benchmark"].get("truncated", {})).values()) else []),
        "",
        f"| method | {metric} | loss | " + " | ".join(c["name"] for c in clients)
        + " | gain recovered | proxy alone | MB up/client/round | MB down/client/round | trainable params"
          " | rounds (best) | examples seen | wall s |",
        "|---" * (11 + len(clients)) + "|",  # method, score, loss, the clients, eight more columns
    ]
    for name, r in methods.items():
        fed = r.get("federation", {})
        per = [f"{headline(r['per_client'][c['name']]):.3f}" for c in clients]
        g = r.get("gain_recovered")
        proxy = headline(r["proxy_after_fl"]) if "proxy_after_fl" in r else None
        lines.append(
            f"| {name} | {headline(r):.3f} | {r['loss']:.3f} | " + " | ".join(per)
            + f" | {'-' if g is None else f'{100 * g:.0f}%'} | {'-' if proxy is None else f'{proxy:.3f}'}"
            f" | {_mb(fed.get('bytes_up_per_client_per_round'))} | {_mb(fed.get('bytes_down_per_client_per_round'))}"
            f" | {r.get('trainable_params', 0):,} | {_rounds(r)} | {_examples_seen(r)} | {r['wall_seconds']:.0f} |"
        )
    lines += _decision_lines(methods)
    lines += _round_check_lines(methods)
    lines += _recall_lines(methods, report["benchmark"]["labels"])
    if report["checks"]:
        lines += ["", "| method | promise | measured | holds |", "|---|---|---|---|"]
        lines += [f"| {c['method']} | {c['check']} | {c['measured']} | {_verdict(c['holds'])} |"
                  for c in report["checks"]]
    curve = plot_curves(learning_curves([report]), out / "report_curve.png", metric)
    lines += ["", f"![{metric}](report.png)", *(["", "![learning curve](report_curve.png)"] if curve else []), "",
              "Accuracy: 4-way, argmax of the label continuation scores on each client's test split. "
              "'gain recovered' = (method - zero-shot) / (centralized - zero-shot). "
              "'proxy alone' = the federated proxy evaluated without the LLM (what a client holds)."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _plot(methods, clients, out / "report.png", metric)
    return out / "report.md"


def _plot(methods: dict, clients: list[dict], path: Path, metric: str = "accuracy") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(methods)
    groups = ["overall"] + [c["name"] for c in clients]
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 3.6))
    for i, n in enumerate(names):
        vals = [headline(methods[n])] + [headline(methods[n]["per_client"][g]) for g in groups[1:]]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=n)
    ax.set_xticks(x, groups)
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
