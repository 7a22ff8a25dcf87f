"""Multi-seed statistics (fedproxy.eval.stats) and the benchmarks/seeds.py summary on hand-made reports."""

import numpy as np
import pytest

from fedproxy.eval.stats import below_by_one_se, gain_ci, paired_ci
from tests.conftest import benchmark_script


def test_paired_ci_is_the_pooled_mean_and_covers_it():
    a = [np.array([1.0, 1, 0, 1]), np.array([1.0, 0, 1, 1, 1, 0])]
    b = [np.array([0.0, 1, 0, 0]), np.array([1.0, 0, 0, 1, 0, 0])]
    r = paired_ci(a, b, reps=500)
    assert r["mean"] == pytest.approx(4 / 10)  # (2 + 2) better examples of 10
    assert r["ci95"][0] <= r["mean"] <= r["ci95"][1]
    assert paired_ci(a, a, reps=200) == {"mean": 0.0, "ci95": [0.0, 0.0]}
    with pytest.raises(ValueError, match="same examples"):
        paired_ci(a, [b[0]] * 2)


def test_gain_share_is_a_ratio_of_pooled_means():
    zs = [np.array([0.0] * 10)]
    cen = [np.array([1.0] * 8 + [0.0] * 2)]
    m = [np.array([1.0] * 6 + [0.0] * 4)]
    g = gain_ci(m, zs, cen, reps=300)
    assert g["mean"] == pytest.approx(0.6 / 0.8)
    assert g["ci95"][0] <= g["mean"] <= g["ci95"][1]


def test_below_by_one_standard_error():
    base = np.array([1.0] * 50 + [0.0] * 50)
    assert not below_by_one_se(base, base)
    worse = base.copy()
    worse[:1] = 0  # one example: well inside one standard error
    assert not below_by_one_se(worse, base)
    worse[:20] = 0
    assert below_by_one_se(worse, base)


def _seeds_module():
    return benchmark_script("seeds")


def _method(pred, gold, **extra):
    half = len(gold) // 2
    per = {c: {"predictions": pred[s], "gold": gold[s], "accuracy": 0.0, "loss": 1.0, "n": len(gold[s])}
           for c, s in (("a", slice(0, half)), ("b", slice(half, None)))}
    return {"accuracy": sum(p == g for p, g in zip(pred, gold)) / len(gold), "per_client": per, **extra}


def test_seed_summary_counts_harm_and_pairs_methods():
    gold = [0, 1, 2, 3] * 25
    zs = list(gold[:60]) + [0] * 40  # 0.60 + the zeros that are right
    cen = list(gold)
    one_class = [0] * 100  # collapsed and below zero-shot
    good = list(gold[:80]) + [0] * 20
    reports = []
    for seed, fused in ((0, good), (1, one_class), (2, good)):
        reports.append({"seed": seed, "config": {"fed": {"aggregator": "ties"}},
                        "benchmark": {"clients": [{"name": "a", "test": 50}, {"name": "b", "test": 50}]},
                        "methods": {"zero-shot": _method(zs, gold), "centralized": _method(cen, gold),
                                    "fedproxy": _method(fused, gold, proxy_after_fl=_method(zs, gold),
                                                        fusion={"decision": {"shipped": "plug-in"}},
                                                        wall_seconds=10.0 * (seed + 1))}})
    s = _seeds_module().summarize(reports)
    assert s["harm"]["seeds_below_zero_shot"] == 1 and s["harm"]["collapsed_shipped"] == 1
    assert s["harm"]["by_method"]["fedproxy"] == {"seeds_below_zero_shot": [1], "collapsed_shipped": [1]}
    assert s["methods"]["fedproxy"]["score"]["per_seed"] == [0.85, 0.25, 0.85]
    assert s["methods"]["fedproxy"]["aggregator"] == "ties"
    # seeds may run on different machines: the wall time is kept per seed beside its mean
    assert s["methods"]["fedproxy"]["wall_s_per_seed"] == [10.0, 20.0, 30.0]
    assert s["methods"]["fedproxy"]["wall_s"] == 20.0
    assert s["paired"]["fedproxy - proxy-alone"]["mean"] == pytest.approx((0.85 + 0.25 + 0.85) / 3 - 0.7)
    g = s["gain_recovered"]
    assert g["method"] == "fedproxy" and g["mean"] == pytest.approx((0.65 - 0.7) / (1.0 - 0.7))


def test_a_method_that_kept_the_unchanged_llm_harmed_nothing_even_where_that_llm_predicts_one_class():
    from fedproxy.report import shipped_harm
    gold = [0, 1, 2, 3] * 25
    one_class = _method([0] * 100, gold)  # the LLM itself, e.g. a tiny random model
    clients = ["a", "b"]
    kept = {**one_class, "fusion": {"decision": {"shipped": "unchanged LLM"}}}
    assert shipped_harm(kept, one_class, clients) == {"below_zero_shot": False, "collapsed": []}
    plugged = {**_method([0] * 90 + [1] * 10, gold), "fusion": {"decision": {"shipped": "plug-in"}}}
    harm = shipped_harm(plugged, _method(gold[:50] + [0] * 50, gold), clients)
    assert harm["below_zero_shot"] and harm["collapsed"]


def test_seed_summary_names_the_seeds_where_the_do_no_harm_rule_shipped_another_candidate():
    gold = [0, 1, 2, 3] * 25

    def trial(scale, val):
        return {"variant": "source", "scale": scale, "aligned": False, "val_accuracy": val}

    def report(seed, shipped, trials):
        fusion = {"variant": "source", "scale": shipped, "aligned": False, "trials": trials}
        return {"seed": seed, "config": {"fed": {"aggregator": "ties"}},
                "benchmark": {"clients": [{"name": "a", "test": 50}, {"name": "b", "test": 50}]},
                "methods": {"zero-shot": _method([0] * 100, gold), "centralized": _method(gold, gold),
                            "fedproxy": _method(gold, gold, fusion=fusion)}}

    reports = [report(0, 1.0, [trial(0, 0.4), trial(1, 0.6), trial(2, 0.6)]),  # a tie goes to the plainer: same
               report(1, 0.0, [trial(0, 0.4), trial(1, 0.5), trial(2, 0.45)])]  # x1 best, but not accepted
    changed = _seeds_module().summarize(reports)["harm"]["rule_changed_choice"]
    assert changed == {"fedproxy": [{"seed": 1, "shipped": "unchanged LLM", "best_validation": "x1 source"}]}


def test_seed_summary_of_a_report_without_per_example_tables_says_so():
    from fedproxy.errors import FedProxyError

    gold = [0, 1] * 10
    bare = {"accuracy": 0.5, "per_client": {"a": {"accuracy": 0.5, "loss": 1.0, "n": 20}}}
    report = {"seed": 0, "config": {"fed": {"aggregator": "ties"}},
              "benchmark": {"clients": [{"name": "a", "test": 20}]},
              "methods": {"zero-shot": _method(gold, gold), "centralized": _method(gold, gold), "fedproxy": bare}}
    with pytest.raises(FedProxyError, match="no per-example test tables"):
        _seeds_module().summarize([report])


def test_the_readme_results_table_reads_every_figure_from_the_summaries():
    mod = benchmark_script("results_table")
    ci = {"mean": 0.1, "ci95": [0.05, 0.15]}
    summary = {"benchmark": "b", "metric": "accuracy", "seeds": [0, 1, 2],
               "methods": {"zero-shot": {"score": {"mean": 0.4, "std": 0.01, "per_seed": []}},
                           "fedproxy": {"score": {"mean": 0.6, "std": 0.02, "per_seed": []}, "proxy_alone": 0.55}},
               "gain_recovered_by_method": {"fedproxy": {"mean": 0.7, "ci95": [0.6, 0.8]}},
               "paired": {"fedproxy - proxy-alone": ci}, "harm": {"seeds_below_zero_shot": 0, "collapsed_shipped": 1}}
    text = mod.table([summary])
    assert "| FedProxy, the fused LLM as shipped | 0.600 ± 0.020 | 70% [60, 80] |" in text
    assert "| FedProxy, the proxy alone (what a client holds) | 0.550 | - |" in text
    assert "| centralized: the whole LLM on pooled data (no privacy, no IP protection) | - | - |" in text
    assert "| FedProxy minus the proxy alone (the IP gap) | +0.100 [+0.050, +0.150] |" in text
    assert text.endswith("| 0 / 1 |")


def test_seed_summary_splits_the_gain_share_into_the_client_models_own_gain_and_what_the_plug_in_carries():
    gold = [0, 1, 2, 3] * 25
    right = lambda k: list(gold[:k]) + [(g + 1) % 4 for g in gold[k:]]  # noqa: E731 - the first k right
    report = {"seed": 0, "config": {"fed": {"aggregator": "ties"}},
              "benchmark": {"clients": [{"name": "a", "test": 50}, {"name": "b", "test": 50}]},
              "methods": {"zero-shot": _method(right(40), gold), "centralized": _method(right(80), gold),
                          "fedproxy": _method(right(60), gold, proxy_before_fl=_method(right(30), gold),
                                              proxy_after_fl=_method(right(55), gold))}}
    t = _seeds_module().summarize([report])["transfer"]["fedproxy"]
    assert t["client_gain"]["mean"] == pytest.approx(25 / 40)  # the proxy gained 25 points of the LLM's 40
    assert t["carried_over"]["mean"] == pytest.approx(20 / 25)  # the fused LLM gained 20 of the proxy's 25
    lo, hi = t["carried_over"]["ci95"]
    assert lo < 0.8 < hi
