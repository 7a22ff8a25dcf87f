import torch

from fedproxy.compress import ProxyMap
from fedproxy.eval.guard import Acceptance
from fedproxy.fuse import select_fusion
from fedproxy.modeling import snapshot
from tests.conftest import tiny_llama

PMAP = ProxyMap(6, [0, 2, 5], "llama", "uniform")
KEY = "model.layers.2.mlp.up_proj.weight"  # where proxy block 1's delta lands


def _setup():
    llm = tiny_llama(layers=6)
    base = snapshot(llm)
    delta = {"model.layers.1.mlp.up_proj.weight": torch.ones_like(base[KEY])}
    return llm, base, delta


def _scale_seen(llm, base) -> float:
    return float((dict(llm.named_parameters())[KEY] - base[KEY]).mean())


def test_unchanged_llm_wins_when_every_delta_scores_worse():
    llm, base, delta = _setup()
    recipe, trials = select_fusion(llm, delta, PMAP, ["source"], [1.0, 2.0],
                                   score=lambda m: -_scale_seen(m, base), keep_llm=True)
    assert recipe["scale"] == 0.0
    assert [t["scale"] for t in trials] == [0.0, 1.0, 2.0]
    assert all(torch.equal(v, base[k]) for k, v in snapshot(llm).items())  # left as it was


def test_a_delta_that_ties_with_the_unchanged_llm_is_not_plugged_in():
    llm, base, delta = _setup()
    recipe, _ = select_fusion(llm, delta, PMAP, ["source", "share"], [1.0, 2.0], score=lambda m: 0.5, keep_llm=True)
    assert recipe["scale"] == 0.0
    assert all(torch.equal(v, base[k]) for k, v in snapshot(llm).items())


def test_without_keep_llm_the_best_delta_is_plugged_in_even_if_it_hurts():
    llm, base, delta = _setup()
    recipe, trials = select_fusion(llm, delta, PMAP, ["source"], [1.0, 2.0], score=lambda m: -_scale_seen(m, base))
    assert recipe["scale"] == 1.0 and len(trials) == 2
    assert abs(_scale_seen(llm, base) - 1.0) < 1e-6


# ---- the do-no-harm rule on hand-made validation tables (fuse.accept_alpha) -------------------
GOLD = [0] * 80 + [1] * 60 + [2] * 60  # 200 validation examples
LLM_PRED = [0] * 80 + [1] * 30 + [0] * 30 + [2] * 30 + [0] * 30  # 0.70; recall 1 / 0.5 / 0.5


def _tables(by_scale: dict[float, list[int]]):
    """score(model): the evaluation table of whichever scale is plugged in (0 = the LLM)."""
    llm, base, delta = _setup()

    def score(model):
        s = round(_scale_seen(model, base))
        pred = by_scale.get(s, LLM_PRED)
        return {"accuracy": sum(p == g for p, g in zip(pred, GOLD)) / len(GOLD), "predictions": pred, "gold": GOLD}

    return llm, base, delta, score


def _fix(pred: list[int], n: int) -> list[int]:
    """``pred`` with the first ``n`` wrong class-1 answers corrected."""
    out, left = list(pred), n
    for i, (p, g) in enumerate(zip(pred, GOLD)):
        if left and g == 1 and p != g:
            out[i], left = g, left - 1
    return out


def test_a_candidate_better_by_one_example_is_not_accepted():
    llm, base, delta, score = _tables({1: _fix(LLM_PRED, 1)})
    recipe, trials = select_fusion(llm, delta, PMAP, ["source"], [1.0], score, keep_llm=True, accept=Acceptance())
    assert recipe["scale"] == 0.0 and recipe["decision"]["shipped"] == "unchanged LLM"
    assert trials[1]["val_accuracy"] > trials[0]["val_accuracy"]
    assert trials[1]["verdict"].startswith("rejected: not shown better")
    assert "200 validation examples" in recipe["decision"]["why"]
    assert all(torch.equal(v, base[k]) for k, v in snapshot(llm).items())


def test_a_clearly_better_candidate_is_accepted():
    llm, base, delta, score = _tables({1: _fix(LLM_PRED, 20)})
    recipe, trials = select_fusion(llm, delta, PMAP, ["source"], [1.0], score, keep_llm=True, accept=Acceptance())
    assert recipe["scale"] == 1.0 and recipe["decision"]["shipped"] == "plug-in"
    assert trials[1]["test"]["wins"] == 20 and trials[1]["test"]["ci_low"] > 0
    assert abs(_scale_seen(llm, base) - 1.0) < 1e-6


def test_a_one_class_candidate_is_rejected_even_when_its_accuracy_is_higher():
    one_class = [0] * 200  # 0.40 here, so make the LLM worse than that on the same gold labels
    llm_pred = [1] * 80 + [0] * 60 + [1] * 30 + [0] * 30  # 0.15
    llm, base, delta, _ = _tables({})

    def score(model):
        pred = one_class if round(_scale_seen(model, base)) == 1 else llm_pred
        return {"accuracy": sum(p == g for p, g in zip(pred, GOLD)) / 200, "predictions": pred, "gold": GOLD}

    recipe, trials = select_fusion(llm, delta, PMAP, ["source"], [1.0], score, keep_llm=True, accept=Acceptance())
    assert trials[1]["val_accuracy"] > trials[0]["val_accuracy"] and trials[1]["test"]["better"]
    assert recipe["scale"] == 0.0
    assert "collapsed" in trials[1]["verdict"] and "for 200 of 200" in trials[1]["verdict"]
    assert recipe["decision"]["rejected"][0]["reason"] == trials[1]["verdict"]


def test_candidates_are_tested_in_a_fixed_order_and_stop_at_the_first_failure():
    # x1 is not shown better, x2 would be: the sequence stops at x1, so x2 is never tested.
    llm, base, delta, score = _tables({1: _fix(LLM_PRED, 1), 2: _fix(LLM_PRED, 25)})
    recipe, trials = select_fusion(llm, delta, PMAP, ["source"], [2.0, 1.0], score, keep_llm=True,
                                   accept=Acceptance())
    assert recipe["scale"] == 0.0
    by_scale = {t["scale"]: t for t in trials}
    assert by_scale[2.0]["verdict"].startswith("not tested")
    # with both shown better, the better validation score ships
    llm, base, delta, score = _tables({1: _fix(LLM_PRED, 20), 2: _fix(LLM_PRED, 25)})
    recipe, _ = select_fusion(llm, delta, PMAP, ["source"], [1.0, 2.0], score, keep_llm=True, accept=Acceptance())
    assert recipe["scale"] == 2.0
