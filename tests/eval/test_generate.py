"""Generation scoring: SQuAD-style token F1 and exact match, greedy answers, the tables the guard reads."""

import pytest

from fedproxy.eval.generate import exact_match, normalize, token_f1


def test_normalization_and_scores_match_hand_computation():
    assert normalize("The Cat, sat!") == ["cat", "sat"]
    assert exact_match("the Earthquakes.", "earthquakes") == 1.0
    # prediction "big red dog", reference "red dog": precision 2/3, recall 1 -> F1 0.8
    assert token_f1("big red dog", "red dog") == pytest.approx(0.8)
    assert token_f1("cat", "dog") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "dog") == 0.0


def test_evaluation_of_a_generation_benchmark_has_per_example_tables(tiny_cfg, tmp_path):
    from fedproxy.context import build_context
    from fedproxy.eval.guard import collapse_reasons, paired_test, per_example

    ctx = build_context(tiny_cfg.with_overrides(["data.benchmark=tiny-qa", "data.max_answer=4"]), tmp_path,
                        progress=False)
    ev = ctx.val_eval(ctx.llm)
    n = len(ctx.bench.server_val)
    assert ev["n"] == n and len(ev["scores"]) == n and len(ev["outputs"]) == n
    assert ev["score"] == pytest.approx(sum(ev["scores"]) / n) and ev["loss"] > 0
    assert all(len(a.split()) <= 4 for a in ev["outputs"])
    assert not paired_test(per_example(ev), per_example(ev))["better"]
    assert isinstance(collapse_reasons(ev, ev), list)
    pooled = ctx.evaluate(ctx.llm)
    assert set(pooled["per_client"]) == set(ctx.bench.client_names) and "exact_match" in pooled
